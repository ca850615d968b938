"""What the gate records and rules on of the requests it reads rather than relays blindly.

`tws.requests` reads them (text or protobuf); an OrderRequest is the audit log's view of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ..tws import requests, requests_policy
from ..tws.codec import Message
from ..tws.errors import MalformedMessage
from ..tws.messages import Out

ORDER_REQUESTS: dict[int, str] = {
    Out.PLACE_ORDER: "placeOrder",
    Out.CANCEL_ORDER: "cancelOrder",
    Out.REQ_GLOBAL_CANCEL: "reqGlobalCancel",
    Out.EXERCISE_OPTIONS: "exerciseOptions",
}
NEW_ORDERS = frozenset({"placeOrder", "exerciseOptions"})  # refused while halted
EXERCISE_ACTIONS = {requests.EXERCISE: "EXERCISE", requests.LAPSE: "LAPSE"}


@dataclass(frozen=True)
class OrderRequest:
    """What the audit log records of an order-affecting request."""

    request: str  # placeOrder | cancelOrder | reqGlobalCancel | exerciseOptions
    order_id: int | None = None
    symbol: str = ""
    sec_type: str = ""
    action: str = ""
    quantity: Decimal | None = None
    order_type: str = ""
    limit_price: float | None = None
    # What the policy reads beyond the audit columns.
    con_id: int = 0
    multiplier: str = ""
    legs: tuple[requests.ComboLeg, ...] = ()
    cash_qty: float | None = None
    client_id: int | None = None  # the order's own client id (protobuf requests only)
    parent_id: int = 0
    what_if: bool = False  # a margin preview: never placed, never open
    attached_orders: bool = False  # a protobuf placeOrder that also asks for a stop loss or profit taker
    discretionary_amt: float = 0.0  # how far past the limit price it may fill
    adjusted_order_type: str = ""  # what an adjustable stop becomes once triggered
    hedge_type: str = ""  # a hedge child: TWS sizes it (its parent's quantity x hedgeParam)
    scale_fields: tuple[str, ...] = ()  # the scale order fields set: TWS places and reprices components
    allocation: requests.Allocation = requests.Allocation()  # FA: TWS splits or sizes the order
    unknown_fields: tuple[str, ...] = ()  # protobuf: where fields ibapi's schema lacks are

    @property
    def reply_id(self) -> int:
        """The request id a refusal is sent with: the order id, or -1 when there is none."""
        return -1 if self.order_id is None else self.order_id


def refused_request(msg_id: int) -> OrderRequest:
    """The audit log's view of a refused request that is not an order (updateConfig, replaceFA, ...)."""
    return OrderRequest(requests_policy.name(msg_id))


def client_id(version: int, message: Message) -> int:
    """The client id in a START_API request."""
    return requests.read_start_api(version, message).client_id


def audited(request: requests.Request) -> OrderRequest:
    """The audit log's view of an order-affecting request."""
    match request:
        case requests.PlaceOrder(order_id=order_id, contract=contract):
            return OrderRequest(
                "placeOrder",
                order_id,
                contract.symbol,
                contract.sec_type,
                request.action,
                request.total_quantity,
                request.order_type,
                request.lmt_price,
                contract.con_id,
                contract.multiplier,
                contract.combo_legs,
                request.cash_qty,
                request.client_id,
                request.parent_id,
                request.what_if,
                request.attached_orders,
                request.discretionary_amt,
                request.adjusted_order_type,
                request.hedge_type or ("(hedgeParam only)" if request.hedge_param else ""),
                request.scale_fields,
                request.allocation,
                request.unknown_fields,
            )
        case requests.CancelOrder(order_id=order_id):
            return OrderRequest("cancelOrder", order_id)
        case requests.ExerciseOptions(order_id=order_id, contract=contract, action=action):
            return OrderRequest(
                "exerciseOptions",
                order_id,
                contract.symbol,
                contract.sec_type,
                EXERCISE_ACTIONS.get(action, str(action)),
                Decimal(request.quantity),
                con_id=contract.con_id,
                multiplier=contract.multiplier,
                unknown_fields=request.unknown_fields,
            )
        case requests.GlobalCancel():
            return OrderRequest("reqGlobalCancel")
    raise ValueError(f"not an order request: {request!r}")


class Misread(MalformedMessage):
    """An order request read to the end of its layout with fields left over: `order` is what was read."""

    def __init__(self, order: OrderRequest, unread_fields: int):
        super().__init__(f"{unread_fields} fields after the end of the order's layout")
        self.order = order


def read_order(version: int, message: Message) -> OrderRequest:
    """The order request in `message` (an id in ORDER_REQUESTS); MalformedMessage if unreadable.

    A text placeOrder must end where its layout ends: a field left over means the gate read some field
    at another place than the gateway will (whatIf among them), so it cannot be judged.
    """
    request = requests.read(version, message)
    if isinstance(request, requests.PlaceOrder) and request.unread_fields:
        raise Misread(audited(request), request.unread_fields)
    return audited(request)
