"""The client requests the gate reads rather than relays blindly: START_API and the order-affecting ones.

Each is read in the form the client sent it: text fields (ibapi's EClient layouts, server versions
100 and up) or, from the version in `tws.versions.PROTOBUF_REQUEST_SINCE`, ibapi's protobuf
`*Request` messages. Only the leading fields are read, so later layout changes do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from google.protobuf.message import DecodeError
from ibapi.protobuf import (CancelOrderRequest_pb2, ExerciseOptionsRequest_pb2, GlobalCancelRequest_pb2,
                            PlaceOrderRequest_pb2, StartApiRequest_pb2)

from ..tws import versions
from ..tws.codec import Message
from ..tws.errors import MalformedMessage
from ..tws.fields import UNSET_DOUBLE, FieldReader
from ..tws.messages import Out

ORDER_REQUESTS = {Out.PLACE_ORDER: "placeOrder", Out.CANCEL_ORDER: "cancelOrder",
                  Out.REQ_GLOBAL_CANCEL: "reqGlobalCancel", Out.EXERCISE_OPTIONS: "exerciseOptions"}
NEW_ORDERS = frozenset({"placeOrder", "exerciseOptions"})  # what the kill switch stops; cancels still pass
EXERCISE_ACTIONS = {1: "EXERCISE", 2: "LAPSE"}


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

    @property
    def reply_id(self) -> int:
        """The request id a refusal is sent with: the order id, or -1 when there is none."""
        return -1 if self.order_id is None else self.order_id


def _protobuf(message: Message, proto_type):
    try:
        return proto_type.FromString(message.body)
    except DecodeError as exc:
        raise MalformedMessage(f"bad protobuf for message {message.msg_id}: {exc}") from None


def _quantity(text: str) -> Decimal:
    try:
        quantity = Decimal(text or "0")
    except InvalidOperation:
        raise MalformedMessage(f"quantity {text[:40]!r} is not a number") from None
    if not quantity.is_finite():
        raise MalformedMessage(f"quantity {text[:40]!r} is not finite")
    return quantity


def client_id(version: int, message: Message) -> int:
    """The client id in a START_API request."""
    if message.protobuf:
        return _protobuf(message, StartApiRequest_pb2.StartApiRequest).clientId
    reader = FieldReader(message.fields())
    reader.skip()  # message version
    return reader.int()


def _text_place_order(version: int, r: FieldReader) -> OrderRequest:
    if version < versions.ORDER_CONTAINER:
        r.skip()  # message version
    order_id = r.int()
    r.skip()  # conId
    symbol, sec_type = r.str(), r.str()
    r.skip(11)  # lastTradeDate, strike, right, multiplier, exchange, primaryExch, currency, localSymbol,
    #             tradingClass, secIdType, secId
    action, quantity, order_type, limit = r.str(), _quantity(r.str()), r.str(), r.float(UNSET_DOUBLE)
    return OrderRequest("placeOrder", order_id, symbol, sec_type, action, quantity, order_type,
                        None if limit >= UNSET_DOUBLE else limit)


def _text_cancel_order(version: int, r: FieldReader) -> OrderRequest:
    if version < versions.CME_TAGGING_FIELDS:
        r.skip()  # message version
    return OrderRequest("cancelOrder", r.int())


def _text_exercise(version: int, r: FieldReader) -> OrderRequest:
    r.skip()  # message version
    order_id = r.int()
    r.skip()  # conId
    symbol, sec_type = r.str(), r.str()
    r.skip(8)  # lastTradeDate, strike, right, multiplier, exchange, currency, localSymbol, tradingClass
    action = r.int()
    return OrderRequest("exerciseOptions", order_id, symbol, sec_type, EXERCISE_ACTIONS.get(action, str(action)),
                        Decimal(r.int()))


def _pb_place_order(message: Message) -> OrderRequest:
    pb = _protobuf(message, PlaceOrderRequest_pb2.PlaceOrderRequest)
    order = pb.order
    return OrderRequest("placeOrder", pb.orderId, pb.contract.symbol, pb.contract.secType, order.action,
                        _quantity(order.totalQuantity), order.orderType,
                        order.lmtPrice if order.HasField("lmtPrice") else None)


def _pb_exercise(message: Message) -> OrderRequest:
    pb = _protobuf(message, ExerciseOptionsRequest_pb2.ExerciseOptionsRequest)
    return OrderRequest("exerciseOptions", pb.orderId, pb.contract.symbol, pb.contract.secType,
                        EXERCISE_ACTIONS.get(pb.exerciseAction, str(pb.exerciseAction)), Decimal(pb.exerciseQuantity))


def _pb_cancel_order(message: Message) -> OrderRequest:
    return OrderRequest("cancelOrder", _protobuf(message, CancelOrderRequest_pb2.CancelOrderRequest).orderId)


def _pb_global_cancel(message: Message) -> OrderRequest:
    _protobuf(message, GlobalCancelRequest_pb2.GlobalCancelRequest)
    return OrderRequest("reqGlobalCancel")


_TEXT = {Out.PLACE_ORDER: _text_place_order, Out.CANCEL_ORDER: _text_cancel_order,
         Out.REQ_GLOBAL_CANCEL: lambda version, r: OrderRequest("reqGlobalCancel"),
         Out.EXERCISE_OPTIONS: _text_exercise}
_PROTOBUF = {Out.PLACE_ORDER: _pb_place_order, Out.CANCEL_ORDER: _pb_cancel_order,
             Out.REQ_GLOBAL_CANCEL: _pb_global_cancel, Out.EXERCISE_OPTIONS: _pb_exercise}


def read_order(version: int, message: Message) -> OrderRequest:
    """The order request in `message` (an id in ORDER_REQUESTS); MalformedMessage if unreadable."""
    if message.protobuf:
        return _PROTOBUF[message.msg_id](message)
    return _TEXT[message.msg_id](version, FieldReader(message.fields()))

