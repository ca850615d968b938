"""Client requests the simulator understands, read from text fields or from ibapi's protobuf messages.

START_API and the order requests are read by `tws.requests`, as the gate reads them. Other text layouts
follow ibapi's EClient (and ib_async's Client, which agrees) for server versions 157..212; protobuf layouts
are ibapi's `*Request` messages, which it sends from the version
`tws.versions.PROTOBUF_REQUEST_SINCE` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from google.protobuf.message import DecodeError
from ibapi.protobuf import (
    AccountDataRequest_pb2,
    AccountSummaryRequest_pb2,
    AccountUpdatesMultiRequest_pb2,
    AllOpenOrdersRequest_pb2,
    AutoOpenOrdersRequest_pb2,
    CancelAccountSummary_pb2,
    CancelAccountUpdatesMulti_pb2,
    CancelHistoricalData_pb2,
    CancelMarketData_pb2,
    CancelPositions_pb2,
    CompletedOrdersRequest_pb2,
    ContractDataRequest_pb2,
    CurrentTimeInMillisRequest_pb2,
    CurrentTimeRequest_pb2,
    ExecutionRequest_pb2,
    HistoricalDataRequest_pb2,
    IdsRequest_pb2,
    ManagedAccountsRequest_pb2,
    MarketDataRequest_pb2,
    MarketDataTypeRequest_pb2,
    OpenOrdersRequest_pb2,
    PositionsRequest_pb2,
    SecDefOptParamsRequest_pb2,
)

from ..tws import requests as tws
from ..tws.codec import Message
from ..tws.errors import MalformedMessage
from ..tws.fields import FieldReader
from ..tws.messages import Out
from ..tws.requests import CancelOrder as CancelOrder  # re-exported: the handlers take them from here
from ..tws.requests import StartApi as StartApi
from .universe import ContractQuery


class UnsupportedRequest(Exception):
    """A well-formed message the simulator does not implement."""

    def __init__(self, msg_id: int):
        super().__init__(f"unsupported message id {msg_id}")
        self.msg_id = msg_id


@dataclass(frozen=True)
class NoArgs:
    """A request that carries nothing but its message id."""

    msg_id: int


@dataclass(frozen=True)
class ReqIds:
    num_ids: int


@dataclass(frozen=True)
class ReqContractDetails:
    req_id: int
    contract: ContractQuery


@dataclass(frozen=True)
class ReqSecDefOptParams:
    req_id: int
    underlying_symbol: str
    fut_fop_exchange: str
    underlying_sec_type: str
    underlying_con_id: int


@dataclass(frozen=True)
class ReqMktData:
    req_id: int
    contract: ContractQuery
    generic_ticks: str
    snapshot: bool
    regulatory_snapshot: bool


@dataclass(frozen=True)
class Cancel:
    """A cancel of request `req_id` (market data, historical data, account summary, ...)."""

    msg_id: int
    req_id: int


@dataclass(frozen=True)
class ReqMarketDataType:
    market_data_type: int


@dataclass(frozen=True)
class ReqHistoricalData:
    req_id: int
    contract: ContractQuery
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what_to_show: str
    format_date: int
    keep_up_to_date: bool


@dataclass(frozen=True)
class PlaceOrder:
    order_id: int
    contract: ContractQuery
    action: str
    quantity: Decimal
    order_type: str
    lmt_price: float | None
    tif: str
    account: str
    oca_group: str
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    what_if: bool


@dataclass(frozen=True)
class ReqAutoOpenOrders:
    auto_bind: bool


@dataclass(frozen=True)
class ReqCompletedOrders:
    api_only: bool


@dataclass(frozen=True)
class ReqAccountSummary:
    req_id: int
    group: str
    tags: str


@dataclass(frozen=True)
class ReqAccountUpdates:
    subscribe: bool
    account: str


@dataclass(frozen=True)
class ReqAccountUpdatesMulti:
    req_id: int
    account: str
    model_code: str


@dataclass(frozen=True)
class ReqExecutions:
    req_id: int
    client_id: int
    account: str
    symbol: str
    sec_type: str
    side: str


# ---- text ------------------------------------------------------------------------------------


def _query(contract: tws.Contract) -> ContractQuery:
    c = contract
    return ContractQuery(
        c.con_id,
        c.symbol,
        c.sec_type,
        c.last_trade_date,
        c.strike,
        c.right,
        c.multiplier,
        c.exchange,
        c.primary_exchange,
        c.currency,
        c.local_symbol,
        c.trading_class,
    )


def _contract(r: FieldReader) -> ContractQuery:
    return _query(tws.read_contract(r))


def _skip_combo_legs(r: FieldReader, contract: ContractQuery) -> None:
    """A BAG's legs in market data requests: conId, ratio, action, exchange each."""
    if contract.sec_type == "BAG":
        r.skip(4 * r.int())


def _text_mkt_data(version: int, r: FieldReader) -> ReqMktData:
    r.skip()
    req_id, contract = r.int(), _contract(r)
    _skip_combo_legs(r, contract)
    if r.bool():
        r.skip(3)  # delta-neutral contract
    return ReqMktData(req_id, contract, r.str(), r.bool(), r.bool())


def _text_historical(version: int, r: FieldReader) -> ReqHistoricalData:
    req_id, contract = r.int(), _contract(r)
    r.skip()  # includeExpired
    end, bar_size, duration, use_rth, what, fmt = r.str(), r.str(), r.str(), r.bool(), r.str(), r.int()
    _skip_combo_legs(r, contract)
    return ReqHistoricalData(req_id, contract, end, bar_size, duration, use_rth, what, fmt, r.bool())


def _text_executions(version: int, r: FieldReader) -> ReqExecutions:
    r.skip()
    req_id, client_id, account = r.int(), r.int(), r.str()
    r.skip()  # time
    symbol, sec_type = r.str(), r.str()
    r.skip()  # exchange
    return ReqExecutions(req_id, client_id, account, symbol, sec_type, r.str())


def _versioned(build: Callable[[FieldReader], object]) -> Callable[[int, FieldReader], object]:
    """A text parser for a request whose first field is its own message version."""

    def parse(version: int, r: FieldReader) -> object:
        r.skip()
        return build(r)

    return parse


# ---- protobuf --------------------------------------------------------------------------------


def _pb_contract(pb) -> ContractQuery:
    return _query(tws.contract_from_pb(pb))


def _place_order(order: tws.PlaceOrder) -> PlaceOrder:
    """The simulator's view of an order: action and order type in upper case."""
    o = order
    return PlaceOrder(
        o.order_id,
        _query(o.contract),
        o.action.upper(),
        o.total_quantity,
        o.order_type.upper(),
        o.lmt_price,
        o.tif,
        o.account,
        o.oca_group,
        o.order_ref,
        o.transmit,
        o.parent_id,
        o.outside_rth,
        o.what_if,
    )


def _pb_executions(pb) -> ReqExecutions:
    f = pb.executionFilter
    return ReqExecutions(pb.reqId, f.clientId, f.acctCode, f.symbol, f.secType, f.side)


def _pb_historical(pb) -> ReqHistoricalData:
    return ReqHistoricalData(
        pb.reqId,
        _pb_contract(pb.contract),
        pb.endDateTime,
        pb.barSizeSetting,
        pb.duration,
        pb.useRTH,
        pb.whatToShow,
        pb.formatDate,
        pb.keepUpToDate,
    )


_TextParser = Callable[[int, FieldReader], object]
_Entry = tuple[_TextParser, type, Callable]


def _no_args(msg_id: Out, proto_type: type) -> dict[int, _Entry]:
    """The table entry of a request that carries nothing the simulator reads."""
    return {msg_id: (lambda version, r: NoArgs(msg_id), proto_type, lambda pb: NoArgs(msg_id))}


def _cancel(msg_id: Out, proto_type: type) -> dict[int, _Entry]:
    """The table entry of a cancel carrying its message version and a request id."""
    return {
        msg_id: (
            _versioned(lambda r: Cancel(msg_id, r.int())),
            proto_type,
            lambda pb: Cancel(msg_id, pb.reqId),
        )
    }


_PARSERS: dict[int, _Entry] = {
    **_no_args(Out.REQ_CURRENT_TIME, CurrentTimeRequest_pb2.CurrentTimeRequest),
    **_no_args(Out.REQ_CURRENT_TIME_IN_MILLIS, CurrentTimeInMillisRequest_pb2.CurrentTimeInMillisRequest),
    Out.REQ_IDS: (
        _versioned(lambda r: ReqIds(r.int())),
        IdsRequest_pb2.IdsRequest,
        lambda pb: ReqIds(pb.numIds),
    ),
    **_no_args(Out.REQ_MANAGED_ACCTS, ManagedAccountsRequest_pb2.ManagedAccountsRequest),
    Out.REQ_CONTRACT_DATA: (
        _versioned(lambda r: ReqContractDetails(r.int(), _contract(r))),
        ContractDataRequest_pb2.ContractDataRequest,
        lambda pb: ReqContractDetails(pb.reqId, _pb_contract(pb.contract)),
    ),
    Out.REQ_SEC_DEF_OPT_PARAMS: (
        lambda v, r: ReqSecDefOptParams(r.int(), r.str(), r.str(), r.str(), r.int()),
        SecDefOptParamsRequest_pb2.SecDefOptParamsRequest,
        lambda pb: ReqSecDefOptParams(
            pb.reqId, pb.underlyingSymbol, pb.futFopExchange, pb.underlyingSecType, pb.underlyingConId
        ),
    ),
    Out.REQ_MKT_DATA: (
        _text_mkt_data,
        MarketDataRequest_pb2.MarketDataRequest,
        lambda pb: ReqMktData(
            pb.reqId, _pb_contract(pb.contract), pb.genericTickList, pb.snapshot, pb.regulatorySnapshot
        ),
    ),
    **_cancel(Out.CANCEL_MKT_DATA, CancelMarketData_pb2.CancelMarketData),
    Out.REQ_MARKET_DATA_TYPE: (
        _versioned(lambda r: ReqMarketDataType(r.int())),
        MarketDataTypeRequest_pb2.MarketDataTypeRequest,
        lambda pb: ReqMarketDataType(pb.marketDataType),
    ),
    Out.REQ_HISTORICAL_DATA: (
        _text_historical,
        HistoricalDataRequest_pb2.HistoricalDataRequest,
        _pb_historical,
    ),
    **_cancel(Out.CANCEL_HISTORICAL_DATA, CancelHistoricalData_pb2.CancelHistoricalData),
    **_no_args(Out.REQ_OPEN_ORDERS, OpenOrdersRequest_pb2.OpenOrdersRequest),
    **_no_args(Out.REQ_ALL_OPEN_ORDERS, AllOpenOrdersRequest_pb2.AllOpenOrdersRequest),
    Out.REQ_AUTO_OPEN_ORDERS: (
        _versioned(lambda r: ReqAutoOpenOrders(r.bool())),
        AutoOpenOrdersRequest_pb2.AutoOpenOrdersRequest,
        lambda pb: ReqAutoOpenOrders(pb.autoBind),
    ),
    Out.REQ_COMPLETED_ORDERS: (
        lambda v, r: ReqCompletedOrders(r.bool()),
        CompletedOrdersRequest_pb2.CompletedOrdersRequest,
        lambda pb: ReqCompletedOrders(pb.apiOnly),
    ),
    **_no_args(Out.REQ_POSITIONS, PositionsRequest_pb2.PositionsRequest),
    **_no_args(Out.CANCEL_POSITIONS, CancelPositions_pb2.CancelPositions),
    Out.REQ_ACCOUNT_SUMMARY: (
        _versioned(lambda r: ReqAccountSummary(r.int(), r.str(), r.str())),
        AccountSummaryRequest_pb2.AccountSummaryRequest,
        lambda pb: ReqAccountSummary(pb.reqId, pb.group, pb.tags),
    ),
    **_cancel(Out.CANCEL_ACCOUNT_SUMMARY, CancelAccountSummary_pb2.CancelAccountSummary),
    Out.REQ_ACCT_DATA: (
        _versioned(lambda r: ReqAccountUpdates(r.bool(), r.str())),
        AccountDataRequest_pb2.AccountDataRequest,
        lambda pb: ReqAccountUpdates(pb.subscribe, pb.acctCode),
    ),
    Out.REQ_ACCOUNT_UPDATES_MULTI: (
        _versioned(lambda r: ReqAccountUpdatesMulti(r.int(), r.str(), r.str())),
        AccountUpdatesMultiRequest_pb2.AccountUpdatesMultiRequest,
        lambda pb: ReqAccountUpdatesMulti(pb.reqId, pb.account, pb.modelCode),
    ),
    **_cancel(Out.CANCEL_ACCOUNT_UPDATES_MULTI, CancelAccountUpdatesMulti_pb2.CancelAccountUpdatesMulti),
    Out.REQ_EXECUTIONS: (_text_executions, ExecutionRequest_pb2.ExecutionRequest, _pb_executions),
}


def _global_cancel(version: int, message: Message) -> NoArgs:
    tws.read_global_cancel(version, message)
    return NoArgs(Out.REQ_GLOBAL_CANCEL)


_FROM_TWS: dict[int, Callable[[int, Message], object]] = {  # the requests tws.requests reads
    Out.START_API: tws.read_start_api,
    Out.PLACE_ORDER: lambda version, message: _place_order(tws.read_place_order(version, message)),
    Out.CANCEL_ORDER: tws.read_cancel_order,
    Out.REQ_GLOBAL_CANCEL: _global_cancel,
}
PARSED = frozenset(_PARSERS) | frozenset(_FROM_TWS)


def parse(version: int, message: Message) -> object:
    """The request in `message`; MalformedMessage if unreadable, UnsupportedRequest if unknown."""
    if message.msg_id in _FROM_TWS:
        return _FROM_TWS[message.msg_id](version, message)
    entry = _PARSERS.get(message.msg_id)
    if entry is None:
        raise UnsupportedRequest(message.msg_id)
    text_parser, proto_type, from_proto = entry
    if not message.protobuf:
        return text_parser(version, FieldReader(message.fields()))
    pb = proto_type()
    try:
        pb.ParseFromString(message.body)
        return from_proto(pb)
    except (DecodeError, ValueError, ArithmeticError) as exc:  # also e.g. a quantity that is no number
        raise MalformedMessage(f"bad protobuf for message {message.msg_id}: {exc}") from None
