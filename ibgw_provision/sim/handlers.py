"""What the simulated gateway does with each request, and what it pushes on every market step."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from ..tws.codes import Code
from ..tws.messages import Out
from . import history
from .broker import Broker, Execution, Margin, Order, OrderRejected, Position, account_values, commission_for
from .config import SimConfig
from .market import NEW_YORK, Market
from .requests import (
    Cancel,
    CancelOrder,
    NoArgs,
    PlaceOrder,
    ReqAccountSummary,
    ReqAccountUpdates,
    ReqAccountUpdatesMulti,
    ReqAutoOpenOrders,
    ReqCompletedOrders,
    ReqContractDetails,
    ReqExecutions,
    ReqHistoricalData,
    ReqIds,
    ReqMarketDataType,
    ReqMktData,
    ReqSecDefOptParams,
    StartApi,
)
from .session import Session
from .universe import ContractQuery, Instrument, Universe

MARKET_DATA_LINES = 100
SEC_DEF_EXCHANGES = ("SMART", "CBOE")
BID, ASK, LAST, HIGH, LOW, VOLUME, CLOSE, MODEL_OPTION = 1, 2, 4, 6, 7, 8, 9, 13
NO_SECURITY = "No security definition has been found for the request"
READ_ONLY = "Error validating request.-'bN' : cause - The API interface is currently in Read-Only mode."


class Simulator(Protocol):
    """What the handlers need of the simulated gateway: its state, not its listener."""

    universe: Universe
    market: Market
    broker: Broker
    sessions: dict[int, Session]  # logged-on clients by client id

    @property
    def config(self) -> SimConfig: ...

    @property
    def accounts(self) -> tuple[str, ...]: ...

    def lines_in_use(self) -> int: ...


def _resolve(server: Simulator, session: Session, req_id: int, query: ContractQuery) -> Instrument | None:
    """The single instrument a request names, or None after sending error 200."""
    found = server.universe.find(query)
    if len(found) == 1:
        return found[0]
    text = (
        NO_SECURITY if not found else f"The contract description specified for {query.symbol} is ambiguous."
    )
    session.send(session.encoder.error(req_id, Code.NO_SECURITY_DEFINITION, text))
    return None


# ---- connection-level requests -----------------------------------------------------------------


def _current_time(server: Simulator, session: Session, req: NoArgs) -> None:
    session.send(session.encoder.current_time(int(time.time())))


def _current_time_millis(server: Simulator, session: Session, req: NoArgs) -> None:
    session.send(session.encoder.current_time_millis(int(time.time() * 1000)))


def _managed_accounts(server: Simulator, session: Session, req: NoArgs) -> None:
    session.send(session.encoder.managed_accounts(server.accounts))


def _start_api(server: Simulator, session: Session, req: StartApi) -> None:
    session.send(
        session.encoder.error(
            -1, Code.REQUEST_VALIDATION_ERROR, "Error validating request.-'bF' : cause - API already started"
        )
    )


def _req_ids(server: Simulator, session: Session, req: ReqIds) -> None:
    session.send(session.encoder.next_valid_id(server.broker.next_order_id))


# ---- contracts -----------------------------------------------------------------------------------


def _contract_details(server: Simulator, session: Session, req: ReqContractDetails) -> None:
    found = server.universe.find(req.contract)
    if not found:
        session.send(session.encoder.error(req.req_id, Code.NO_SECURITY_DEFINITION, NO_SECURITY))
        return
    enc = session.encoder
    session.send(
        b"".join(enc.contract_data(req.req_id, inst) for inst in found) + enc.contract_data_end(req.req_id)
    )


def _sec_def_opt_params(server: Simulator, session: Session, req: ReqSecDefOptParams) -> None:
    enc, under = session.encoder, server.universe.underlying(req.underlying_symbol, req.underlying_con_id)
    out = []
    if under is not None and req.underlying_sec_type.upper() in ("STK", ""):
        strikes = list(server.universe.strikes[under.symbol])
        out = [
            enc.sec_def_opt_params(
                req.req_id, exchange, under.con_id, under.symbol, "100", [server.universe.expiry], strikes
            )
            for exchange in SEC_DEF_EXCHANGES
        ]
    session.send(b"".join(out) + enc.sec_def_opt_params_end(req.req_id))


# ---- market data ---------------------------------------------------------------------------------


def _ticks(server: Simulator, session: Session, req_id: int, inst: Instrument, full: bool) -> bytes:
    """Quote ticks for one line; `full` adds the day's high, low and close."""
    enc, quote = session.encoder, server.market.quote(inst)
    out = [
        enc.tick_price(req_id, BID, quote.bid, quote.bid_size),
        enc.tick_price(req_id, ASK, quote.ask, quote.ask_size),
        enc.tick_price(req_id, LAST, quote.last, quote.last_size),
        enc.tick_size(req_id, VOLUME, enc.volume(quote.volume)),
    ]
    if inst.is_option:
        out.append(enc.tick_option(req_id, MODEL_OPTION, server.market.greeks(inst)))
    elif full:
        walk = server.market.walk(inst)
        out += [
            enc.tick_price(req_id, tick, round(price, 2), None)
            for tick, price in ((HIGH, walk.high), (LOW, walk.low), (CLOSE, walk.close))
        ]
    return b"".join(out)


def _mkt_data(server: Simulator, session: Session, req: ReqMktData) -> None:
    enc, snapshot = session.encoder, req.snapshot or req.regulatory_snapshot
    if req.req_id in session.market_data:
        session.send(
            enc.error(
                req.req_id,
                Code.REQUEST_PROCESSING_ERROR,
                "Error processing request.-'bW' : cause - Duplicate ticker id",
            )
        )
        return
    inst = _resolve(server, session, req.req_id, req.contract)
    if inst is None:
        return
    if not snapshot and server.lines_in_use() >= MARKET_DATA_LINES:
        session.send(enc.error(req.req_id, Code.MAX_TICKERS, "Max number of tickers has been reached"))
        return
    head = enc.tick_req_params(req.req_id, inst.min_tick) + enc.market_data_type(req.req_id, 1)
    ticks = _ticks(server, session, req.req_id, inst, full=True)
    if snapshot:
        session.send(head + ticks + enc.tick_snapshot_end(req.req_id))
        return
    session.market_data[req.req_id] = inst
    session.send(head + ticks)


def _cancel_mkt_data(server: Simulator, session: Session, req: Cancel) -> None:
    if session.market_data.pop(req.req_id, None) is None:
        session.send(
            session.encoder.error(
                req.req_id, Code.UNKNOWN_TICKER_ID, f"Can't find EId with tickerId:{req.req_id}"
            )
        )


def _cancel_historical_data(server: Simulator, session: Session, req: Cancel) -> None:
    """Bars go out whole at request time, so nothing is left running to cancel."""


def _market_data_type(server: Simulator, session: Session, req: ReqMarketDataType) -> None:
    """Live data is always available, so every line reports type 1 (real-time) whatever was asked."""


def _historical_data(server: Simulator, session: Session, req: ReqHistoricalData) -> None:
    inst = _resolve(server, session, req.req_id, req.contract)
    if inst is None:
        return
    try:
        spec = history.parse_request(req, datetime.now(NEW_YORK))
    except history.HistoryError as exc:
        session.send(session.encoder.error(req.req_id, exc.code, str(exc)))
        return
    bars = server.market.bars(inst, spec.times, spec.bar_seconds)
    dates = [history.bar_date(bar, spec.bar_seconds, req.format_date) for bar in bars]
    session.send(
        session.encoder.historical_data(
            req.req_id, bars, dates, history.range_text(spec.start), history.range_text(spec.end)
        )
    )


# ---- orders ----------------------------------------------------------------------------------


def _send_open_orders(session: Session, orders: list[Order]) -> None:
    enc = session.encoder
    session.send(b"".join(enc.open_order(o) + enc.order_status(o) for o in orders) + enc.open_order_end())


def _new_order(server: Simulator, session: Session, req: PlaceOrder, inst: Instrument) -> Order:
    account = req.account or server.accounts[0]
    return Order(
        session.client,
        req.order_id,
        0,
        inst,
        req.action,
        req.quantity,
        req.order_type,
        req.lmt_price,
        req.tif or "DAY",
        account,
        req.order_ref,
        req.oca_group,
        req.outside_rth,
        req.parent_id,
        what_if=req.what_if,
    )


def _what_if(server: Simulator, order: Order) -> Order:
    """A what-if order: margin impact and commission estimate, never placed."""
    values = _values(server, order.account)
    init, maint, equity = (
        float(values[k][0]) for k in ("InitMarginReq", "MaintMarginReq", "EquityWithLoanValue")
    )
    price = server.market.quote(order.instrument).last
    notional = float(order.quantity) * price * order.instrument.size_multiplier
    commission = commission_for(order.instrument, order.quantity, price)
    change = (0.25 * notional, 0.25 * notional, -commission)
    order.status, order.commission = "PreSubmitted", commission
    order.margin = Margin(
        (init, maint, equity), change, (init + change[0], maint + change[1], equity + change[2])
    )
    return order


def _place_order(server: Simulator, session: Session, req: PlaceOrder) -> None:
    enc = session.encoder
    if server.config.read_only:
        session.send(enc.error(req.order_id, Code.REQUEST_VALIDATION_ERROR, READ_ONLY))
        return
    inst = _resolve(server, session, req.order_id, req.contract)
    if inst is None:
        return
    order = _new_order(server, session, req, inst)
    try:
        if order.what_if:
            server.broker.validate(order)
            session.send(enc.open_order(_what_if(server, order)))
            return
        order = server.broker.place(order)
    except OrderRejected as exc:
        session.send(enc.error(req.order_id, exc.code, exc.message))
        return
    session.send(enc.open_order(order) + enc.order_status(order))
    execution = server.broker.fill(order, server.market.quote(inst))
    if execution is not None:
        _publish_fill(server, execution)


def _cancel(server: Simulator, order: Order) -> None:
    server.broker.cancel(order.client_id, order.order_id)
    owner = server.sessions.get(order.client_id)
    if owner is not None:
        enc = owner.encoder
        owner.send(
            enc.order_status(order)
            + enc.error(order.order_id, Code.ORDER_CANCELED, "Order Canceled - reason:")
        )


def _cancel_order(server: Simulator, session: Session, req: CancelOrder) -> None:
    order = server.broker.orders.get((session.client, req.order_id))
    if order is None or not order.is_open:
        session.send(
            session.encoder.error(
                req.order_id,
                Code.ORDER_TO_CANCEL_NOT_FOUND,
                f"OrderId {req.order_id} that needs to be cancelled is not found.",
            )
        )
        return
    _cancel(server, order)


def _open_orders(server: Simulator, session: Session, req: NoArgs) -> None:
    _send_open_orders(session, server.broker.open_orders(session.client_id))


def _all_open_orders(server: Simulator, session: Session, req: NoArgs) -> None:
    _send_open_orders(session, server.broker.open_orders())


def _global_cancel(server: Simulator, session: Session, req: NoArgs) -> None:
    for order in server.broker.open_orders():
        _cancel(server, order)


def _auto_open_orders(server: Simulator, session: Session, req: ReqAutoOpenOrders) -> None:
    """Binding manual TWS orders to client 0: there are no manual orders in the simulator."""


def _completed_orders(server: Simulator, session: Session, req: ReqCompletedOrders) -> None:
    enc = session.encoder
    session.send(
        b"".join(enc.completed_order(o) for o in server.broker.completed_orders())
        + enc.completed_orders_end()
    )


def _executions(server: Simulator, session: Session, req: ReqExecutions) -> None:
    enc = session.encoder

    def wanted(e: Execution) -> bool:
        o = e.order
        return (
            (not req.client_id or o.client_id == req.client_id)
            and (not req.account or o.account == req.account)
            and (not req.symbol or o.instrument.symbol == req.symbol.upper())
            and (not req.sec_type or o.instrument.sec_type == req.sec_type.upper())
            and (not req.side or e.side == req.side.upper() or o.action == req.side.upper())
        )

    found = [e for e in server.broker.executions if wanted(e)]
    session.send(
        b"".join(enc.exec_details(req.req_id, e) + enc.commission_report(e) for e in found)
        + enc.exec_details_end(req.req_id)
    )


def _publish_fill(server: Simulator, execution: Execution) -> None:
    """A fill goes to the order's client; the position change goes to every subscriber."""
    order = execution.order
    owner = server.sessions.get(order.client_id)
    if owner is not None:
        enc = owner.encoder
        owner.send(
            enc.exec_details(-1, execution)
            + enc.order_status(order)
            + enc.open_order(order)
            + enc.commission_report(execution)
        )
    position = server.broker.accounts[order.account].position(order.instrument)
    for session in list(server.sessions.values()):
        if session.positions_subscribed:
            session.send(session.encoder.position(position))
        if session.account_updates == order.account:
            session.send(_account_update(server, session, order.account, position))
        for req_id, accounts in session.account_multi.items():
            if order.account in accounts:
                session.send(_account_multi(server, session, req_id, order.account))
        for req_id, tags in session.account_summaries.items():
            session.send(_summary(server, session, req_id, tags, [order.account]))


# ---- accounts ------------------------------------------------------------------------------------


def _values(server: Simulator, account: str) -> dict[str, tuple[str, str]]:
    return account_values(server.broker.accounts[account], lambda inst: server.market.quote(inst).last)


def _account_update(server: Simulator, session: Session, account: str, *positions: Position) -> bytes:
    enc = session.encoder
    values = [
        enc.account_value(key, value, currency, account)
        for key, (value, currency) in _values(server, account).items()
    ]
    portfolio = [enc.portfolio_value(p, server.market.quote(p.instrument).last) for p in positions]
    return b"".join(values + portfolio) + enc.account_time(datetime.now(NEW_YORK).strftime("%H:%M"))


def _account_updates(server: Simulator, session: Session, req: ReqAccountUpdates) -> None:
    if not req.subscribe:
        session.account_updates = None
        return
    account = req.account or server.accounts[0]
    if account not in server.broker.accounts:
        session.send(
            session.encoder.error(
                -1,
                Code.REQUEST_VALIDATION_ERROR,
                f"Error validating request.-'bm' : cause - Invalid account code '{account}'",
            )
        )
        return
    session.account_updates = account
    held = list(server.broker.accounts[account].positions.values())
    session.send(
        _account_update(server, session, account, *held) + session.encoder.account_download_end(account)
    )


def _account_multi(server: Simulator, session: Session, req_id: int, account: str) -> bytes:
    enc = session.encoder
    return b"".join(
        enc.account_update_multi(req_id, account, key, value, currency)
        for key, (value, currency) in _values(server, account).items()
    )


def _account_updates_multi(server: Simulator, session: Session, req: ReqAccountUpdatesMulti) -> None:
    accounts = [req.account] if req.account and req.account != "All" else list(server.accounts)
    unknown = [a for a in accounts if a not in server.broker.accounts]
    if unknown:
        session.send(
            session.encoder.error(
                req.req_id,
                Code.REQUEST_VALIDATION_ERROR,
                f"Error validating request.-'bm' : cause - Invalid account code '{unknown[0]}'",
            )
        )
        return
    session.account_multi[req.req_id] = tuple(accounts)
    session.send(
        b"".join(_account_multi(server, session, req.req_id, account) for account in accounts)
        + session.encoder.account_update_multi_end(req.req_id)
    )


def _positions(server: Simulator, session: Session, req: NoArgs) -> None:
    session.positions_subscribed = True
    enc = session.encoder
    session.send(b"".join(enc.position(p) for p in server.broker.positions()) + enc.position_end())


def _cancel_positions(server: Simulator, session: Session, req: NoArgs) -> None:
    session.positions_subscribed = False


def _summary(server: Simulator, session: Session, req_id: int, tags: frozenset[str], accounts) -> bytes:
    return b"".join(
        session.encoder.account_summary(req_id, account, tag, value, currency)
        for account in accounts
        for tag, (value, currency) in _values(server, account).items()
        if tag in tags
    )


def _account_summary(server: Simulator, session: Session, req: ReqAccountSummary) -> None:
    """The requested tags for every account, then updates whenever a fill changes them."""
    tags = frozenset(t.strip() for t in req.tags.split(","))
    session.account_summaries[req.req_id] = tags
    session.send(
        _summary(server, session, req.req_id, tags, server.accounts)
        + session.encoder.account_summary_end(req.req_id)
    )


def _cancel_account_summary(server: Simulator, session: Session, req: Cancel) -> None:
    session.account_summaries.pop(req.req_id, None)


def _cancel_account_updates_multi(server: Simulator, session: Session, req: Cancel) -> None:
    session.account_multi.pop(req.req_id, None)


# ---- dispatch and the market clock -----------------------------------------------------------------

_HANDLERS: dict[int, Callable] = {
    Out.START_API: _start_api,
    Out.REQ_CURRENT_TIME: _current_time,
    Out.REQ_CURRENT_TIME_IN_MILLIS: _current_time_millis,
    Out.REQ_MANAGED_ACCTS: _managed_accounts,
    Out.REQ_IDS: _req_ids,
    Out.REQ_CONTRACT_DATA: _contract_details,
    Out.REQ_SEC_DEF_OPT_PARAMS: _sec_def_opt_params,
    Out.REQ_MKT_DATA: _mkt_data,
    Out.CANCEL_MKT_DATA: _cancel_mkt_data,
    Out.REQ_MARKET_DATA_TYPE: _market_data_type,
    Out.REQ_HISTORICAL_DATA: _historical_data,
    Out.CANCEL_HISTORICAL_DATA: _cancel_historical_data,
    Out.PLACE_ORDER: _place_order,
    Out.CANCEL_ORDER: _cancel_order,
    Out.REQ_GLOBAL_CANCEL: _global_cancel,
    Out.REQ_OPEN_ORDERS: _open_orders,
    Out.REQ_ALL_OPEN_ORDERS: _all_open_orders,
    Out.REQ_AUTO_OPEN_ORDERS: _auto_open_orders,
    Out.REQ_COMPLETED_ORDERS: _completed_orders,
    Out.REQ_EXECUTIONS: _executions,
    Out.REQ_POSITIONS: _positions,
    Out.CANCEL_POSITIONS: _cancel_positions,
    Out.REQ_ACCOUNT_SUMMARY: _account_summary,
    Out.CANCEL_ACCOUNT_SUMMARY: _cancel_account_summary,
    Out.REQ_ACCT_DATA: _account_updates,
    Out.REQ_ACCOUNT_UPDATES_MULTI: _account_updates_multi,
    Out.CANCEL_ACCOUNT_UPDATES_MULTI: _cancel_account_updates_multi,
}
HANDLED = frozenset(_HANDLERS)


def handle(server: Simulator, session: Session, msg_id: int, request: object) -> None:
    _HANDLERS[msg_id](server, session, request)


def market_step(server: Simulator) -> None:
    """After prices move: fill resting orders that became marketable, then stream every line."""
    for order in server.broker.open_orders():
        execution = server.broker.fill(order, server.market.quote(order.instrument))
        if execution is not None:
            _publish_fill(server, execution)
    for session in list(server.sessions.values()):
        if session.market_data and not session.congested:
            session.send(
                b"".join(
                    _ticks(server, session, req_id, inst, full=False)
                    for req_id, inst in session.market_data.items()
                )
            )
