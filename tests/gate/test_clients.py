"""ib_async (version 178, text) and ibapi-latest (226, protobuf) through the gate to `ibgw sim`:
logon, orders, and each refusal as the client's error callback reports it."""

import logging
import threading

import pytest
from ib_async import LimitOrder, MarketOrder, Stock
from ibapi.order_cancel import OrderCancel

from ibgw_provision.gate.audit import query
from ibgw_provision.tws import versions

from ..kit.gate import UNREGISTERED, audited_orders, ib_async_app, ib_async_refused, open_raw, run
from ..kit.sim import IbapiApp, contract, order, until

SPY = Stock("SPY", "SMART", "USD")
NOT_REGISTERED = "refused by ibgw gate: client id 9 is not registered for the paper gateway"


def _filled(trade):
    return until(lambda: trade.orderStatus.status == "Filled", message=f"{trade.log}")


def test_ib_async_logs_on_and_trades(gate, sim):
    async def scenario(ib, errors):
        assert (ib.client.serverVersion(), ib.managedAccounts()) == (178, ["DU1234567"])
        [spy] = await ib.qualifyContractsAsync(SPY)
        trade = ib.placeOrder(spy, MarketOrder("BUY", 10))
        await _filled(trade)
        return trade.order.orderId

    order_id = ib_async_app(gate.port, 1, scenario)
    assert sim.server.broker.orders[(1, order_id)].status == "Filled"
    [row] = audited_orders(gate.config.audit_db)
    assert (
        row["app"],
        row["request"],
        row["order_id"],
        row["symbol"],
        row["sec_type"],
        row["action"],
        row["quantity"],
        row["order_type"],
        row["decision"],
    ) == ("trader", "placeOrder", order_id, "SPY", "STK", "BUY", "10", "MKT", "forwarded")


@pytest.mark.parametrize(
    "max_version",
    [versions.LATEST, versions.PROTOBUF + 1, versions.PROTOBUF - 1],
    ids=["protobuf", "raw-ids", "text"],
)
def test_ibapi_logs_on_and_trades(start_sim, start_gate, max_version):
    sim = start_sim(max_version=max_version)
    gate = start_gate(sim.port)
    app = IbapiApp().start(gate.port, client_id=1)
    try:
        assert app.client.serverVersion() == max_version
        assert app.wait("managedAccounts") == [("DU1234567",)]
        order_id = app.wait("nextValidId")[0][0]
        app.client.placeOrder(order_id, contract(), order("BUY", 3, "LMT", lmtPrice=700.0))
        app.wait("orderStatus", lambda oid, status, *rest: oid == order_id and status == "Filled")
    finally:
        app.stop()
    [row] = audited_orders(gate.config.audit_db)
    assert (row["order_id"], row["quantity"], row["order_type"], row["limit_price"], row["decision"]) == (
        order_id,
        "3",
        "LMT",
        700.0,
        "forwarded",
    )


def _ibapi_refused(port: int, client_id: int) -> list[tuple]:
    """Errors ibapi reports (reqId, code, text) when its logon through the gate is refused."""
    app = IbapiApp()
    app.client.connect("127.0.0.1", port, client_id)
    app.thread = threading.Thread(target=app.client.run, daemon=True)
    app.thread.start()
    try:
        refusals = app.wait("error", lambda req_id, when, code, *rest: code in (326, 502))
    finally:
        app.stop()
    assert not app.received("nextValidId")
    return [(req_id, code, text) for req_id, when, code, text, *_ in refusals]


def test_an_unregistered_client_id_is_refused_before_the_gateway_sees_it(gate, sim, caplog):
    caplog.set_level(logging.INFO, logger="ibgw.sim")
    [(req_id, code, text)] = run(ib_async_refused(gate.port, UNREGISTERED))
    assert (req_id, code, text) == (-1, 502, NOT_REGISTERED)
    [(req_id, code, text)] = _ibapi_refused(gate.port, UNREGISTERED)
    assert (req_id, code, text) == (-1, 502, NOT_REGISTERED)
    assert not [r for r in caplog.records if r.name == "ibgw.sim" and "client 9 " in r.getMessage()]
    rows = query(gate.config.audit_db)["connections"]
    # a stranger's second refusal from the same source within a minute is counted, not a row
    assert [(r["app"], r["client_id"], r["outcome"], r["version"]) for r in rows] == [
        (None, 9, "refused", 178)
    ]
    assert (gate.gate.state.strangers.refused, gate.gate.state.refused_connections) == (2, 2)


def test_a_known_client_id_from_the_wrong_source_is_refused(gate):
    [(req_id, code, text)] = _ibapi_refused(gate.port, 4)  # app "remote" may connect from 127.0.0.2 only
    assert (req_id, code, text) == (
        -1,
        502,
        "refused by ibgw gate: client id 4 (app remote) may not connect from 127.0.0.1",
    )


def test_a_client_id_already_connected_is_refused_and_the_first_stays(gate):
    async def scenario(ib, errors):
        [(req_id, code, text)] = await ib_async_refused(gate.port, 1)
        assert (req_id, code) == (-1, 326) and "client id 1 (app trader) is already connected" in text
        assert (await ib.reqCurrentTimeAsync()).year > 2000

    ib_async_app(gate.port, 1, scenario)


def test_ib_async_read_only_app_streams_but_its_orders_are_refused(gate, sim):
    async def scenario(ib, errors):
        [spy] = await ib.qualifyContractsAsync(SPY)
        ticker, ticks = ib.reqMktData(spy), []
        ticker.updateEvent += lambda t: ticks.append(t.last)
        await until(lambda: len(ticks) >= 3)
        trade = ib.placeOrder(spy, LimitOrder("BUY", 1, 500.0))
        await until(lambda: errors)
        ib.cancelOrder(trade.order)
        ib.reqGlobalCancel()
        await until(lambda: len(errors) == 3, message=f"{errors}")
        assert (await ib.reqCurrentTimeAsync()).year > 2000  # still connected
        return trade.order.orderId, errors

    order_id, errors = ib_async_app(gate.port, 2, scenario)
    text = "refused by ibgw gate: app watcher is read-only"
    assert errors == [(order_id, 321, text), (order_id, 321, text), (-1, 321, text)]
    assert sim.server.broker.orders == {}
    rows = audited_orders(gate.config.audit_db)
    assert [(r["request"], r["order_id"], r["decision"], r["reason"]) for r in rows] == [
        ("placeOrder", order_id, "refused", "app watcher is read-only"),
        ("cancelOrder", order_id, "refused", "app watcher is read-only"),
        ("reqGlobalCancel", None, "refused", "app watcher is read-only"),
    ]


@pytest.mark.parametrize(
    "max_version",
    [versions.LATEST, versions.PROTOBUF + 1, versions.PROTOBUF - 1],
    ids=["protobuf", "raw-ids", "text"],
)
def test_ibapi_read_only_app_order_requests_are_refused(start_sim, start_gate, max_version):
    sim = start_sim(max_version=max_version)
    gate = start_gate(sim.port)
    trader = IbapiApp().start(gate.port, client_id=1)
    watcher = IbapiApp().start(gate.port, client_id=2)
    try:
        resting = trader.wait("nextValidId")[0][0]
        trader.client.placeOrder(resting, contract(), order("BUY", 1, "LMT", lmtPrice=100.0))
        trader.wait("orderStatus", lambda oid, status, *rest: status == "Submitted")
        order_id = watcher.wait("nextValidId")[0][0]
        watcher.client.placeOrder(order_id, contract(), order("BUY", 1, "MKT"))
        watcher.client.cancelOrder(resting, OrderCancel())
        watcher.client.reqGlobalCancel(OrderCancel())
        watcher.client.exerciseOptions(order_id + 1, contract(sec_type="OPT"), 1, 1, "", 0, "", "", False)
        refusals = watcher.wait("error", lambda req_id, when, code, *rest: code == 321, count=4)
        watcher.client.reqCurrentTime()
        watcher.wait("currentTime")  # still connected
    finally:
        watcher.stop()
        trader.stop()
    text = "refused by ibgw gate: app watcher is read-only"
    assert [(req_id, text_) for req_id, _, _, text_, *_ in refusals] == [
        (order_id, text),
        (resting, text),
        (-1, text),
        (order_id + 1, text),
    ]
    assert [o.order_id for o in sim.server.broker.orders.values()] == [
        resting
    ]  # the gateway saw none of them
    assert sim.server.broker.orders[(1, resting)].status == "Submitted"


def test_order_limits_in_both_encodings(gate, sim):
    async def scenario(ib, errors):
        [spy] = await ib.qualifyContractsAsync(SPY)
        allowed = ib.placeOrder(spy, MarketOrder("BUY", 5))
        too_big = ib.placeOrder(spy, MarketOrder("BUY", 6))
        await _filled(allowed)
        await until(lambda: errors)
        return too_big.order.orderId, errors

    too_big, errors = ib_async_app(gate.port, 3, scenario)
    assert errors == [(too_big, 321, "refused by ibgw gate: quantity 6 is above app limited's limit of 5")]
    app = IbapiApp().start(gate.port, client_id=3)
    try:
        order_id = app.wait("nextValidId")[0][0]
        app.client.placeOrder(
            order_id,
            contract(sec_type="OPT", lastTradeDateOrContractMonth="20250101", strike=600.0, right="C"),
            order("BUY", 1, "MKT"),
        )
        [(_, _, code, text, _)] = app.wait("error", lambda req_id, when, code, *rest: code == 321)
    finally:
        app.stop()
    assert text == "refused by ibgw gate: secType OPT is not allowed for app limited (allowed: STK)"
    decisions = [(r["quantity"], r["sec_type"], r["decision"]) for r in audited_orders(gate.config.audit_db)]
    assert decisions == [("5", "STK", "forwarded"), ("6", "STK", "refused"), ("1", "OPT", "refused")]


def test_strangers_refused_logons_are_bounded_audit_rows(gate):
    """Anyone who reaches the front could log on with an unregistered client id as fast as they can
    reconnect: each refusal was a synchronous audit row, without bound. A registered app's refusal is still
    a row each time."""
    count = 100

    async def scenario():
        for client_id in [UNREGISTERED] * count + [4, 4]:  # app "remote" may connect from 127.0.0.2 only
            client = await open_raw(gate.port, client_id)
            assert (await client.error())[1] == 502
            await client.read_until_closed()
            client.writer.close()

    run(scenario(), timeout=60)
    rows = query(gate.config.audit_db)["connections"]
    assert [(r["app"], r["client_id"], r["outcome"]) for r in rows] == [
        (None, UNREGISTERED, "refused"),
        ("remote", 4, "refused"),
        ("remote", 4, "refused"),
    ]
    assert (gate.gate.state.strangers.refused, gate.gate.state.refused_connections) == (count, count + 2)
    gate.call(gate.gate.state.strangers.flush_all(gate.gate.audit))  # as the gate's stop does
    rows = query(gate.config.audit_db)["connections"]
    assert rows[-1]["reason"].startswith(f"{count - 1} more refused logons from this source")
