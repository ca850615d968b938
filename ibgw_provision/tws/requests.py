"""Readers for the client requests a server side must understand: START_API and the order-affecting ones
(placeOrder, cancelOrder, reqGlobalCancel, exerciseOptions), plus the contract every request carries.

Each request is read in the form the client sent it: text fields (ibapi's EClient layouts, server
versions 100 to 202, with a text or raw 4-byte message id) or, from the version in
`versions.PROTOBUF_REQUEST_SINCE`, ibapi's protobuf `*Request` messages. Both give the same typed
object. Anything unreadable raises MalformedMessage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, TypeVar

from google.protobuf.message import DecodeError
from google.protobuf.message import Message as Protobuf
from google.protobuf.unknown_fields import UnknownFieldSet
from ibapi.protobuf import (
    CancelOrderRequest_pb2,
    ExerciseOptionsRequest_pb2,
    GlobalCancelRequest_pb2,
    OpenOrdersRequest_pb2,
    PlaceOrderRequest_pb2,
    StartApiRequest_pb2,
)

from . import versions
from .codec import Message, encode_protobuf, encode_text
from .errors import MalformedMessage
from .fields import UNSET_DOUBLE, UNSET_INTEGER, FieldReader, double_text, parse_decimal
from .messages import Out

EXERCISE, LAPSE = 1, 2  # exerciseOptions actions
COMPETE_AGAINST_BEST_UP_TO_MID = math.inf  # the competeAgainstBestOffset that adds the mid offsets
_CONDITION_FIELDS = {
    1: 5,
    3: 2,
    4: 2,
    5: 3,
    6: 4,
    7: 4,
}  # order condition type -> its fields after the connector
_P = TypeVar("_P", bound=Protobuf)


@dataclass(frozen=True)
class ComboLeg:
    con_id: int
    ratio: int
    action: str  # BUY | SELL
    exchange: str = ""


@dataclass(frozen=True)
class Contract:
    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""  # lastTradeDateOrContractMonth
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""
    sec_id_type: str = ""
    sec_id: str = ""
    combo_legs: tuple[ComboLeg, ...] = ()  # a BAG's legs


@dataclass(frozen=True)
class StartApi:
    client_id: int
    optional_capabilities: str = ""


@dataclass(frozen=True)
class Allocation:
    """A financial advisor's allocation of an order among accounts."""

    fa_group: str = ""
    fa_method: str = ""
    fa_percentage: str = ""
    model_code: str = ""


@dataclass(frozen=True)
class PlaceOrder:
    order_id: int
    contract: Contract
    action: str
    total_quantity: Decimal  # 0 for a cash-quantity order
    order_type: str
    lmt_price: float | None  # None: not set
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    what_if: bool
    cash_qty: float | None  # None: not set (always None below CASH_QTY)
    client_id: int | None = None  # only protobuf requests carry it
    attached_orders: bool = False  # protobuf attachedOrders (a stop loss, a profit taker) in the request
    discretionary_amt: float = 0.0  # how far past lmtPrice the order may fill
    adjusted_order_type: str = ""  # what an adjustable stop becomes once triggered ("" or "None": nothing)
    hedge_type: str = ""  # a hedge child (D, B, F, P): TWS sizes it from its parent and hedgeParam
    hedge_param: str = ""
    scale_fields: tuple[str, ...] = ()  # the scale order fields set (TWS places and reprices components)
    allocation: Allocation = field(default_factory=Allocation)  # FA: TWS splits or sizes it
    unknown_fields: tuple[str, ...] = ()  # protobuf: where fields ibapi's schema lacks are (not judged)
    unread_fields: int = 0  # text fields after the last one the layout knows: 0 for a well-formed request


@dataclass(frozen=True)
class CancelOrder:
    order_id: int
    manual_order_cancel_time: str = ""


@dataclass(frozen=True)
class GlobalCancel:
    pass


@dataclass(frozen=True)
class ExerciseOptions:
    order_id: int  # ibapi's reqId
    contract: Contract  # no primary_exchange, sec_id or legs on this request
    action: int  # EXERCISE or LAPSE
    quantity: int
    account: str
    override: bool
    manual_order_time: str = ""
    customer_account: str = ""
    professional_customer: bool = False
    unknown_fields: tuple[str, ...] = ()  # protobuf: where fields ibapi's schema lacks are (not judged)


# ---- shared pieces ---------------------------------------------------------------------------


def protobuf(message: Message, proto_type: type[_P]) -> _P:
    """The protobuf body of `message` as `proto_type`."""
    try:
        return proto_type.FromString(message.body)
    except DecodeError as exc:
        raise MalformedMessage(f"bad protobuf for message {message.msg_id}: {exc}") from None


def unknown_fields(pb: Protobuf, path: str = "") -> tuple[str, ...]:
    """Where `pb` carries fields ibapi's schema does not know (a newer gateway's attributes): the paths of
    the messages that hold them ("" for `pb` itself), depth first."""
    found: tuple[str, ...] = (path or pb.DESCRIPTOR.name,) if len(UnknownFieldSet(pb)) else ()
    for descriptor, value in pb.ListFields():
        if descriptor.type != descriptor.TYPE_MESSAGE or descriptor.message_type.GetOptions().map_entry:
            continue
        inner = f"{path}.{descriptor.name}" if path else descriptor.name
        for item in value if descriptor.is_repeated else (value,):
            found += unknown_fields(item, inner)
    return found


def quantity(text: str) -> Decimal:
    """A decimal quantity as clients send it ("" is 0); MalformedMessage unless finite."""
    value = parse_decimal(text or "0")
    if value is None:
        raise MalformedMessage(f"quantity {text[:40]!r} is not a finite number")
    return value


def _price(value: float | None) -> float | None:
    """None for an unset double (empty field, or Double.MAX_VALUE / infinity)."""
    return None if value is None or value >= UNSET_DOUBLE else value


def read_contract(r: FieldReader) -> Contract:
    """conId, symbol, secType, lastTradeDate, strike, right, multiplier, exchange, primaryExch, currency,
    localSymbol, tradingClass: the contract prefix of most text requests."""
    return Contract(
        r.int(),
        r.str(),
        r.str(),
        r.str(),
        r.float() or 0.0,
        r.str(),
        r.str(),
        r.str(),
        r.str(),
        r.str(),
        r.str(),
        r.str(),
    )


def contract_from_pb(pb: Any) -> Contract:
    """A protobuf Contract (ibapi.protobuf.Contract_pb2)."""
    multiplier = double_text(pb.multiplier) if pb.HasField("multiplier") else ""
    legs = tuple(ComboLeg(leg.conId, leg.ratio, leg.action, leg.exchange) for leg in pb.comboLegs)
    return Contract(
        pb.conId,
        pb.symbol,
        pb.secType,
        pb.lastTradeDateOrContractMonth,
        pb.strike,
        pb.right,
        multiplier,
        pb.exchange,
        pb.primaryExch,
        pb.currency,
        pb.localSymbol,
        pb.tradingClass,
        pb.secIdType,
        pb.secId,
        legs,
    )


# ---- START_API -------------------------------------------------------------------------------


def read_start_api(version: int, message: Message) -> StartApi:
    if message.protobuf:
        pb = protobuf(message, StartApiRequest_pb2.StartApiRequest)
        return StartApi(pb.clientId, pb.optionalCapabilities)
    r = FieldReader(message.fields())
    r.skip()  # message version
    return StartApi(r.int(), r.str() if r.remaining() else "")


# ---- placeOrder ------------------------------------------------------------------------------


def _combo_legs(r: FieldReader) -> tuple[ComboLeg, ...]:
    """A BAG's legs, then the order's per-leg prices and smart combo routing params (skipped)."""
    legs = []
    for _ in range(r.int()):  # a count beyond the fields present ends in MalformedMessage
        con_id, ratio, action, exchange = r.int(), r.int(), r.str(), r.str()
        r.skip(4)  # openClose, shortSaleSlot, designatedLocation, exemptCode
        legs.append(ComboLeg(con_id, ratio, action, exchange))
    r.skip(r.int())  # order combo leg prices
    r.skip(2 * r.int())  # smart combo routing params
    return tuple(legs)


def _skip_conditions(r: FieldReader) -> None:
    count = r.int()
    for _ in range(count):
        kind = r.int()
        if kind not in _CONDITION_FIELDS:
            raise MalformedMessage(f"unknown order condition type {kind}")
        r.skip(1 + _CONDITION_FIELDS[kind])  # connector ("a" / "o"), then the condition's own fields
    if count > 0:
        r.skip(2)  # conditionsIgnoreRth, conditionsCancelOrder


def _sends_scale_fields(increment: float | None) -> bool:
    """ibapi's (and the Java client's) test on scalePriceIncrement: set and above 0, infinity included.
    (ib_async leaves infinity out: its order then reads as unread fields and is refused by the gate.)"""
    return increment is not None and increment != UNSET_DOUBLE and increment > 0


SCALE_FIELDS = (
    "scaleInitLevelSize",
    "scaleSubsLevelSize",
    "scalePriceIncrement",
    "scalePriceAdjustValue",
    "scalePriceAdjustInterval",
    "scaleProfitOffset",
    "scaleAutoReset",
    "scaleInitPosition",
    "scaleInitFillQty",
    "scaleRandomPercent",
    "scaleTable",
)


def scale_set(value: Any) -> bool:
    """Is a scale field set: a true bool, a non-empty text, a number that is neither 0 nor unset."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return value != ""
    return value not in (0, UNSET_INTEGER, UNSET_DOUBLE)


@dataclass
class _Middle:
    """What the gate reads of the fields between `hidden` and `whatIf`."""

    what_if: bool = False
    discretionary_amt: float = 0.0
    allocation: Allocation = field(default_factory=Allocation)
    scale: dict[str, Any] = field(default_factory=dict)
    hedge_type: str = ""
    hedge_param: str = ""


def _read_scale(r: FieldReader) -> dict[str, Any]:
    """continuousUpdate .. scaleTable, activeStartTime, activeStopTime: the scale fields by name."""
    r.skip(4)  # continuousUpdate, referencePriceType, trailStopPrice, trailingPercent
    scale: dict[str, Any] = {"scaleInitLevelSize": r.float(None), "scaleSubsLevelSize": r.float(None)}
    increment = scale["scalePriceIncrement"] = r.float(None)
    if _sends_scale_fields(increment):
        for name in SCALE_FIELDS[3:-1]:
            scale[name] = r.bool() if name in ("scaleAutoReset", "scaleRandomPercent") else r.float(None)
    scale["scaleTable"] = r.str()
    r.skip(2)  # activeStartTime, activeStopTime
    return scale


def _skip_middle(version: int, r: FieldReader, order_type: str) -> _Middle:
    """The fields between `hidden` (after the legs) and `whatIf`, whatIf included."""
    middle = _Middle()
    r.skip()  # sharesAllocation (always "")
    middle.discretionary_amt = r.float() or 0.0
    r.skip(2)  # goodAfterTime, goodTillDate
    fa_group, fa_method, fa_percentage = r.str(), r.str(), r.str()
    if version < versions.FA_PROFILE_DESUPPORT:
        r.skip()  # faProfile
    model_code = r.str() if version >= versions.MODELS_SUPPORT else ""
    middle.allocation = Allocation(fa_group, fa_method, fa_percentage, model_code)
    r.skip(21)  # shortSaleSlot .. overridePercentageConstraints, volatility, volatilityType
    delta_neutral_order_type = r.str()
    r.skip()  # deltaNeutralAuxPrice
    if delta_neutral_order_type:
        r.skip(8)  # deltaNeutralConId .. deltaNeutralDesignatedLocation
    middle.scale = _read_scale(r)
    middle.hedge_type = r.str()
    if middle.hedge_type:
        middle.hedge_param = r.str()
    r.skip(4)  # optOutSmartRouting, clearingAccount, clearingIntent, notHeld
    if r.bool():  # delta-neutral contract
        r.skip(3)
    if r.str():  # algoStrategy
        r.skip(2 * r.int())  # algoParams
    r.skip()  # algoId
    middle.what_if = r.bool()
    return middle


def _skip_to_cash_qty(version: int, r: FieldReader, order_type: str) -> str:
    """The fields between whatIf and cashQty; adjustedOrderType."""
    adjusted_order_type = ""
    r.skip(4)  # orderMiscOptions, solicited, randomizeSize, randomizePrice
    if version >= versions.PEGGED_TO_BENCHMARK:
        if order_type in ("PEG BENCH", "PEGBENCH"):
            r.skip(5)  # referenceContractId .. referenceExchangeId
        _skip_conditions(r)
        adjusted_order_type = r.str()
        r.skip(6)  # triggerPrice .. adjustableTrailingUnit
    if version >= versions.EXT_OPERATOR:
        r.skip()
    if version >= versions.SOFT_DOLLAR_TIER:
        r.skip(2)  # softDollarTier name, value
    return adjusted_order_type


_TAIL = (
    (versions.DECISION_MAKER, 2),
    (versions.MIFID_EXECUTION, 2),
    (versions.AUTO_PRICE_FOR_HEDGE, 1),
    (versions.ORDER_CONTAINER, 1),
    (versions.D_PEG_ORDERS, 1),
    (versions.PRICE_MGMT_ALGO, 1),
    (versions.DURATION, 1),
    (versions.POST_TO_ATS, 1),
    (versions.AUTO_CANCEL_PARENT, 1),
    (versions.ADVANCED_ORDER_REJECT, 1),
    (versions.MANUAL_ORDER_TIME, 1),
)  # mifid2 .. manualOrderTime


def _skip_tail(version: int, r: FieldReader, contract: Contract, order_type: str) -> None:
    """The fields after cashQty."""
    r.skip(sum(count for since, count in _TAIL if version >= since))
    if version >= versions.PEGBEST_PEGMID_OFFSETS:
        if contract.exchange == "IBKRATS":
            r.skip()  # minTradeQty
        mid_offsets = order_type in ("PEG MID", "PEGMID")
        if order_type in ("PEG BEST", "PEGBEST"):
            r.skip()  # minCompeteSize
            mid_offsets = r.float() == COMPETE_AGAINST_BEST_UP_TO_MID
        if mid_offsets:
            r.skip(2)  # midOffsetAtWhole, midOffsetAtHalf
    since = (
        (versions.CUSTOMER_ACCOUNT, 1),
        (versions.PROFESSIONAL_CUSTOMER, 1),
        (versions.INCLUDE_OVERNIGHT, 1),
        (versions.CME_TAGGING_FIELDS, 1),
        (versions.IMBALANCE_ONLY, 1),
    )
    rfq = 2 if versions.RFQ_FIELDS <= version < versions.UNDO_RFQ_FIELDS else 0
    r.skip(rfq + sum(count for since_version, count in since if version >= since_version))


def _text_place_order(version: int, r: FieldReader) -> PlaceOrder:
    if version < versions.ORDER_CONTAINER:
        r.skip()  # message version
    order_id, contract = r.int(), read_contract(r)
    sec_id_type, sec_id = r.str(), r.str()
    action, total_quantity, order_type = r.str(), r.decimal(), r.str()
    lmt_price, aux_price = _price(r.float(None)), _price(r.float(None))
    tif, oca_group, account = r.str(), r.str(), r.str()
    r.skip(2)  # openClose, origin
    order_ref, transmit, parent_id = r.str(), r.bool(), r.int()
    r.skip(4)  # blockOrder, sweepToFill, displaySize, triggerMethod
    outside_rth = r.bool()
    r.skip()  # hidden
    legs = _combo_legs(r) if contract.sec_type.upper() == "BAG" else ()  # as the Java client: any case
    contract = replace(contract, sec_id_type=sec_id_type, sec_id=sec_id, combo_legs=legs)
    middle = _skip_middle(version, r, order_type)
    adjusted_order_type = _skip_to_cash_qty(version, r, order_type)
    cash_qty = _price(r.float(None)) if version >= versions.CASH_QTY else None
    _skip_tail(version, r, contract, order_type)
    return PlaceOrder(
        order_id,
        contract,
        action,
        total_quantity,
        order_type,
        lmt_price,
        aux_price,
        tif,
        oca_group,
        account,
        order_ref,
        transmit,
        parent_id,
        outside_rth,
        middle.what_if,
        cash_qty,
        discretionary_amt=middle.discretionary_amt,
        adjusted_order_type=adjusted_order_type,
        hedge_type=middle.hedge_type,
        hedge_param=middle.hedge_param,
        scale_fields=tuple(name for name, value in middle.scale.items() if scale_set(value)),
        allocation=middle.allocation,
        unread_fields=r.remaining(),
    )


def _pb_place_order(pb: Any) -> PlaceOrder:
    """ibapi sets transmit only when true: an absent transmit is false."""
    o = pb.order

    def optional(name: str) -> Any:
        return getattr(o, name) if o.HasField(name) else None

    return PlaceOrder(
        pb.orderId,
        contract_from_pb(pb.contract),
        o.action,
        quantity(o.totalQuantity),
        o.orderType,
        _price(optional("lmtPrice")),
        _price(optional("auxPrice")),
        o.tif,
        o.ocaGroup,
        o.account,
        o.orderRef,
        o.transmit,
        o.parentId,
        o.outsideRth,
        o.whatIf,
        _price(optional("cashQty")),
        optional("clientId"),
        # ibapi always sets the field; an empty one attaches nothing.
        pb.HasField("attachedOrders") and pb.attachedOrders.ByteSize() > 0,
        o.discretionaryAmt,
        o.adjustedOrderType,
        o.hedgeType,
        o.hedgeParam,
        tuple(name for name in SCALE_FIELDS if scale_set(optional(name))),
        Allocation(o.faGroup, o.faMethod, o.faPercentage, o.modelCode),
        unknown_fields(pb),
    )


def read_place_order(version: int, message: Message) -> PlaceOrder:
    if message.protobuf:
        return _pb_place_order(protobuf(message, PlaceOrderRequest_pb2.PlaceOrderRequest))
    return _text_place_order(version, FieldReader(message.fields()))


# ---- cancels -------------------------------------------------------------------------------


def read_cancel_order(version: int, message: Message) -> CancelOrder:
    if message.protobuf:
        pb = protobuf(message, CancelOrderRequest_pb2.CancelOrderRequest)
        return CancelOrder(pb.orderId, pb.orderCancel.manualOrderCancelTime)
    r = FieldReader(message.fields())
    if version < versions.CME_TAGGING_FIELDS:
        r.skip()  # message version
    order_id = r.int()
    return CancelOrder(order_id, r.str() if version >= versions.MANUAL_ORDER_TIME else "")


def read_global_cancel(version: int, message: Message) -> GlobalCancel:
    if message.protobuf:
        protobuf(message, GlobalCancelRequest_pb2.GlobalCancelRequest)
    return GlobalCancel()


# ---- exerciseOptions -------------------------------------------------------------------------


def _text_exercise(version: int, r: FieldReader) -> ExerciseOptions:
    r.skip()  # message version
    order_id = r.int()
    con_id, symbol, sec_type, last_trade_date, strike = r.int(), r.str(), r.str(), r.str(), r.float() or 0.0
    right, multiplier, exchange, currency, local_symbol, trading_class = (r.str() for _ in range(6))
    contract = Contract(
        con_id,
        symbol,
        sec_type,
        last_trade_date,
        strike,
        right,
        multiplier,
        exchange,
        "",
        currency,
        local_symbol,
        trading_class,
    )
    action, amount, account, override = r.int(), r.int(), r.str(), r.bool()
    manual_time = r.str() if version >= versions.MANUAL_ORDER_TIME_EXERCISE_OPTIONS else ""
    customer = r.str() if version >= versions.CUSTOMER_ACCOUNT else ""
    professional = r.bool() if version >= versions.PROFESSIONAL_CUSTOMER else False
    return ExerciseOptions(
        order_id, contract, action, amount, account, override, manual_time, customer, professional
    )


def read_exercise_options(version: int, message: Message) -> ExerciseOptions:
    if not message.protobuf:
        return _text_exercise(version, FieldReader(message.fields()))
    pb = protobuf(message, ExerciseOptionsRequest_pb2.ExerciseOptionsRequest)
    return ExerciseOptions(
        pb.orderId,
        contract_from_pb(pb.contract),
        pb.exerciseAction,
        pb.exerciseQuantity,
        pb.account,
        pb.override,
        pb.manualOrderTime,
        pb.customerAccount,
        pb.professionalCustomer,
        unknown_fields(pb),
    )


# ---- what a server side sends on its own behalf ---------------------------------------------------


def encode_req_open_orders(version: int) -> bytes:
    """reqOpenOrders as ibapi sends it at `version` (protobuf from the version it switches)."""
    if versions.request_is_protobuf(version, Out.REQ_OPEN_ORDERS):
        return encode_protobuf(
            Out.REQ_OPEN_ORDERS, OpenOrdersRequest_pb2.OpenOrdersRequest().SerializeToString()
        )
    return encode_text(version, Out.REQ_OPEN_ORDERS, (1,))


Request = StartApi | PlaceOrder | CancelOrder | GlobalCancel | ExerciseOptions
READERS: dict[int, Callable[[int, Message], Request]] = {
    Out.START_API: read_start_api,
    Out.PLACE_ORDER: read_place_order,
    Out.CANCEL_ORDER: read_cancel_order,
    Out.REQ_GLOBAL_CANCEL: read_global_cancel,
    Out.EXERCISE_OPTIONS: read_exercise_options,
}


def read(version: int, message: Message) -> Request:
    """The request in `message` (an id in READERS), in whichever encoding it came."""
    return READERS[message.msg_id](version, message)
