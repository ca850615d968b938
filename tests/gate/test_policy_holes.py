"""Issue 13's order-policy findings, each replayed through `ibgw gate` (a process) in front of `ibgw sim`,
with requests built by ibapi's own encoder at a text (200) and a protobuf (226) version."""

import json
import math
import struct
import time

import pytest
from ibapi.contract import ComboLeg
from ibapi.order_cancel import OrderCancel
from ibapi.protobuf.UpdateConfigRequest_pb2 import UpdateConfigRequest
from ibapi.server_versions import MIN_SERVER_VER_ATTACHED_ORDERS

from ibgw_provision.gate.audit import query
from ibgw_provision.observe import health
from ibgw_provision.provision import agent
from ibgw_provision.tws import codec, requests, versions
from ibgw_provision.tws.messages import In, Out

from ..kit.gate import LOOPBACK, GateProcess, config_data, open_raw, run, write_config
from ..kit.sim import STEP, RawClient, contract, ibapi_request, order, until

TEXT, PROTOBUF = versions.PROTOBUF - 1, versions.LATEST
BOTH = pytest.mark.parametrize("version", [TEXT, PROTOBUF], ids=["text", "protobuf"])
REFUSED = "refused by ibgw gate: "
SPY_CON_ID = 756733


def _app(name: str, client_id: int, **rules) -> dict:
    return {"name": name, "client_id": client_id, "sources": [LOOPBACK], "read_only": False} | rules


TRADER = _app("trader", 1)
NOTIONAL = _app("notional", 8, max_notional_per_order=1000)
BOUNDED = _app("bounded", 9, max_notional_per_order=1000, max_order_quantity=1000)
NOT_CAPPED = (
    "app {app} has max_notional_per_order: a {type} order's price is not capped by a limit price, so its "
    "notional cannot be bounded (send LMT, STP LMT, LIT, LOC or LOO)"
)
WATCHER = _app("watcher", 2, read_only=True)
STK_ONLY = _app("stk-only", 3, max_order_quantity=10, allowed_sec_types=["STK", "BAG"])
OPTIONS = _app("options", 4, max_order_quantity=10, allowed_sec_types=["STK", "OPT", "BAG"])


@pytest.fixture
def start(short_dir, sim):
    """Start `ibgw gate` in a process in front of the simulator, with these apps."""
    started = []

    def start_gate(*apps, **overrides) -> GateProcess:
        data = config_data(short_dir, sim.port, apps=list(apps), **overrides)
        process = GateProcess(write_config(short_dir / "gate.yml", data))
        process.audit_db = short_dir / "audit.sqlite"
        started.append(process)
        return process

    yield start_gate
    for process in started:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(STEP)


def _option_con_id(sim, right="C") -> int:
    return next(
        i.con_id for i in sim.server.universe.instruments.values() if i.sec_type == "OPT" and i.right == right
    )


async def _message(client: RawClient, msg_id: int, limit: int = 2000):
    for _ in range(limit):
        message = await client.next_message()
        if message.msg_id == msg_id:
            return message
    raise AssertionError(f"no message {msg_id} within {limit}")


async def _qualify(client: RawClient, con_id: int, req_id: int = 77) -> None:
    """reqContractDetails by conId, as an app qualifying a contract does; waits for its end."""
    client.send_ibapi(
        lambda c: c.reqContractDetails(req_id, contract("", "", conId=con_id, exchange="", currency=""))
    )
    await _message(client, In.CONTRACT_DATA_END)


async def _alive(client: RawClient) -> None:
    client.send(49, 1)  # reqCurrentTime
    await _message(client, In.CURRENT_TIME)


def _place(client: RawClient, con_tract, an_order) -> int:
    order_id = client.next_valid_id
    client.next_valid_id += 1
    client.send_ibapi(lambda c: c.placeOrder(order_id, con_tract, an_order))
    return order_id


def _decisions(process: GateProcess) -> list[tuple]:
    """(app, request, decision) of each audit row, once none is still 'forwarding'."""
    for _ in range(int(STEP / 0.01)):
        rows = query(process.audit_db)["orders"]
        if all(r["decision"] != "forwarding" for r in rows):
            return [(r["app"], r["request"], r["decision"]) for r in rows]
        time.sleep(0.01)
    raise AssertionError(f"rows still forwarding: {rows}")


# ---- finding 2: settings and other non-read requests ------------------------------------------------

SETTINGS_REQUESTS = {
    "updateConfig": lambda c: c.updateConfigProtoBuf(
        UpdateConfigRequest(reqId=5, resetAPIOrderSequence=True)
    ),
    "replaceFA": lambda c: c.replaceFA(6, 1, "<ListOfGroups/>"),
    "setServerLogLevel": lambda c: c.setServerLogLevel(5),
    "reqAutoOpenOrders": lambda c: c.reqAutoOpenOrders(True),
    "updateDisplayGroup": lambda c: c.updateDisplayGroup(7, "8314@SMART"),
}


def _verify_request(c) -> None:
    c.extraAuth = True
    c.verifyRequest("evil", "1.0")


@BOTH
def test_settings_and_session_requests_are_refused_for_every_app(start, version):
    gate = start(TRADER, WATCHER)

    async def scenario():
        for client_id in (1, 2):
            client = await RawClient.connect(gate.port, client_id, max_version=version)
            calls = dict(SETTINGS_REQUESTS) | {"verifyRequest": _verify_request}
            if version < versions.PROTOBUF:
                del calls["updateConfig"]  # protobuf only (version 221 on)
            for name, call in calls.items():
                client.send_ibapi(call)
                req_id, code, text = await client.error()
                assert (code, text.startswith(REFUSED)) == (321, True), (name, text)
                assert name in text
            await _alive(client)  # still connected
            await client.close()

    run(scenario())
    rows = query(gate.audit_db)["orders"]
    assert {r["decision"] for r in rows} == {"refused"} and len(rows) == 2 * (5 if version < 201 else 6)
    assert {r["request"] for r in rows} >= {"replaceFA", "setServerLogLevel", "verifyRequest"}


def test_allow_settings_lets_an_app_change_settings(start):
    gate = start(_app("admin", 1, allow_settings=True))

    async def scenario():
        client = await RawClient.connect(gate.port, 1, max_version=PROTOBUF)
        client.send_ibapi(SETTINGS_REQUESTS["setServerLogLevel"])
        _, code, text = await client.error()
        assert code == 321 and "ibgw sim" in text  # the gateway (simulator) answered: it was forwarded
        await client.close()

    run(scenario())


@BOTH
def test_read_only_is_default_deny(start, version):
    gate = start(TRADER, WATCHER, STK_ONLY)

    async def scenario():
        watcher = await RawClient.connect(gate.port, 2, max_version=version)
        watcher.send_ibapi(lambda c: c.reqContractDetails(1, contract()))  # a read passes
        await _message(watcher, In.CONTRACT_DATA_END)
        watcher.send(180, 1, 2)  # an id no table knows
        _, code, text = await watcher.error()
        assert (code, text) == (
            321,
            REFUSED + "request 180 (unknown request) is not allowed for a read-only app",
        )
        await _alive(watcher)
        trader = await RawClient.connect(gate.port, 1, max_version=version)
        trader.send(180, 1, 2)  # an unlimited trading app's unknown request passes while trading is open
        _, code, text = await trader.error()
        assert "ibgw sim" in text
        limited = await RawClient.connect(gate.port, 3, max_version=version)
        limited.send(180, 1, 2)  # it could be an order the limits cannot read
        assert (await limited.error())[1:] == (
            321,
            REFUSED
            + "request 180 (unknown request) is not allowed for app stk-only: it has order limits the gate "
            "could not apply",
        )
        await _alive(limited)

    run(scenario())


@BOTH
def test_the_health_probe_app_may_only_ask_the_time(start, version):
    gate = start(TRADER, _app("ibgw-health", 9, read_only=True, probe_only=True))

    async def scenario():
        probe = await RawClient.connect(gate.port, 9, max_version=version)
        await _alive(probe)  # reqCurrentTime: all health asks
        probe.send(61)  # reqPositions: a read, but the account is not the probe's to see
        assert (await probe.error())[1:] == (
            321,
            REFUSED + "reqPositions is not allowed for app ibgw-health: it may only ask the time",
        )
        probe.send_ibapi(lambda c: c.reqContractDetails(1, contract()))
        assert (await probe.error())[2].startswith(REFUSED + "reqContractDetails is not allowed")
        await _alive(probe)

    run(scenario())


def test_while_halted_only_reads_and_cancels_pass(start, sim):
    gate = start(TRADER, _app("admin", 5, allow_settings=True))

    async def scenario():
        trader = await RawClient.connect(gate.port, 1, max_version=PROTOBUF)
        resting = _place(trader, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        await _message(trader, In.ORDER_STATUS)
        assert gate.cli("gate", "halt").returncode == 0
        admin = await RawClient.connect(gate.port, 5, max_version=PROTOBUF)
        admin.send_ibapi(SETTINGS_REQUESTS["setServerLogLevel"])
        assert (await admin.error())[
            2
        ] == REFUSED + "setServerLogLevel (settings request) is not allowed while trading is halted"
        trader.send(180, 1)
        assert (await trader.error())[
            2
        ] == REFUSED + "request 180 (unknown request) is not allowed while trading is halted"
        refused = _place(trader, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        assert (await trader.error())[:2] == (refused, 321)
        trader.send_ibapi(lambda c: c.cancelOrder(resting, OrderCancel()))
        assert (await trader.error())[:2] == (resting, 202)  # cancels pass: the gateway cancelled it
        trader.send_ibapi(lambda c: c.reqGlobalCancel(OrderCancel()))  # an unlimited app may: it flattens
        await _alive(trader)

    run(scenario())
    assert _decisions(gate)[-2:] == [
        ("trader", "cancelOrder", "forwarded"),
        ("trader", "reqGlobalCancel", "forwarded"),
    ]


# ---- finding 3: the secType is the conId's -------------------------------------------------------


@BOTH
def test_an_option_con_id_under_secType_stk_is_refused(start, sim, version):
    gate = start(STK_ONLY)
    option = _option_con_id(sim)

    async def scenario():
        client = await RawClient.connect(gate.port, 3, max_version=version)
        disguised = contract("SPY", "STK", conId=option)
        unknown = _place(client, disguised, order("BUY", 1, "MKT"))
        assert await client.error() == (
            unknown,
            321,
            REFUSED + f"conId {option} is unknown to the gate, so its secType cannot be checked "
            "(qualify the contract with reqContractDetails first)",
        )
        await _qualify(client, option)
        known = _place(client, disguised, order("BUY", 1, "MKT"))
        assert await client.error() == (
            known,
            321,
            REFUSED + f"secType OPT (conId {option}) is not allowed for app stk-only (allowed: STK, BAG)",
        )
        await _qualify(client, SPY_CON_ID)
        stock = _place(client, contract("SPY", "STK", conId=SPY_CON_ID), order("BUY", 1, "MKT"))
        await _message(client, In.ORDER_STATUS)
        return stock

    stock = run(scenario())
    assert [(o.order_id, o.instrument.sec_type) for o in sim.server.broker.orders.values()] == [
        (stock, "STK")
    ]


# ---- finding 5: exercise ---------------------------------------------------------------------------


@BOTH
def test_exercise_obeys_sec_types_and_quantity(start, sim, version):
    gate = start(STK_ONLY, OPTIONS)
    option = _option_con_id(sim)
    exercise = contract("SPY", "OPT", conId=option, lastTradeDateOrContractMonth="", strike=0.0, right="")

    async def scenario():
        stk = await RawClient.connect(gate.port, 3, max_version=version)
        await _qualify(stk, option)
        stk.send_ibapi(lambda c: c.exerciseOptions(900, exercise, 1, 100_000, "", 0, "", "", False))
        assert await stk.error() == (
            900,
            321,
            REFUSED + "secType OPT is not allowed for app stk-only (allowed: STK, BAG)",
        )
        opt = await RawClient.connect(gate.port, 4, max_version=version)
        opt.send_ibapi(lambda c: c.exerciseOptions(901, exercise, 1, 100_000, "", 0, "", "", False))
        assert await opt.error() == (901, 321, REFUSED + "quantity 100000 is above app options's limit of 10")

    run(scenario())
    assert _decisions(gate) == [
        ("stk-only", "exerciseOptions", "refused"),
        ("options", "exerciseOptions", "refused"),
    ]


# ---- finding 6: combo legs -------------------------------------------------------------------------


def _bag(*con_ids: int, ratio: int = 100):
    bag = contract("SPY", "BAG")
    bag.comboLegs = []
    for con_id in con_ids:
        leg = ComboLeg()
        leg.conId, leg.ratio, leg.action, leg.exchange = con_id, ratio, "BUY", "SMART"
        bag.comboLegs.append(leg)
    return bag


@BOTH
def test_combo_legs_are_checked_leg_by_leg(start, sim, version):
    gate = start(STK_ONLY, OPTIONS)
    call, put = _option_con_id(sim, "C"), _option_con_id(sim, "P")

    async def scenario():
        stk = await RawClient.connect(gate.port, 3, max_version=version)
        for con_id in (call, put):
            await _qualify(stk, con_id)
        refused = _place(stk, _bag(call, put), order("BUY", 10, "LMT", lmtPrice=1.0))
        assert await stk.error() == (
            refused,
            321,
            REFUSED
            + f"combo leg 1: secType OPT (conId {call}) is not allowed for app stk-only (allowed: STK, BAG)",
        )
        opt = await RawClient.connect(gate.port, 4, max_version=version)
        too_big = _place(opt, _bag(call, put), order("BUY", 10, "LMT", lmtPrice=1.0))
        assert await opt.error() == (
            too_big,
            321,
            REFUSED + "combo leg 1: quantity 10 x ratio 100 is above app options's limit of 10",
        )
        unknown = _place(opt, _bag(call, 123456789, ratio=1), order("BUY", 1, "LMT", lmtPrice=1.0))
        assert "combo leg 2: conId 123456789 is unknown" in (await opt.error())[2]
        return unknown

    run(scenario())
    assert sim.server.broker.orders == {}


# ---- finding 7: reqGlobalCancel --------------------------------------------------------------------


def test_global_cancel_is_a_permission(start, sim):
    gate = start(TRADER, STK_ONLY, _app("sweeper", 6, max_order_quantity=5, allow_global_cancel=True))

    async def scenario():
        trader = await RawClient.connect(gate.port, 1, max_version=PROTOBUF)
        resting = _place(trader, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        await _message(trader, In.ORDER_STATUS)
        limited = await RawClient.connect(gate.port, 3, max_version=TEXT)
        limited.send_ibapi(lambda c: c.reqGlobalCancel(OrderCancel()))
        assert await limited.error() == (
            -1,
            321,
            REFUSED
            + "reqGlobalCancel cancels every app's orders: app stk-only does not have allow_global_cancel",
        )
        assert sim.server.broker.orders[(1, resting)].status == "Submitted"
        sweeper = await RawClient.connect(gate.port, 6, max_version=TEXT)
        sweeper.send_ibapi(lambda c: c.reqGlobalCancel(OrderCancel()))
        assert (await trader.error())[:2] == (resting, 202)

    run(scenario())


# ---- finding 13: cashQty ---------------------------------------------------------------------------


@BOTH
def test_cash_quantity_is_bounded(start, version):
    gate = start(STK_ONLY, _app("cash", 7, max_cash_quantity=1000))

    async def scenario():
        limited = await RawClient.connect(gate.port, 3, max_version=version)
        refused = _place(limited, contract(), order("BUY", 1, "MKT", cashQty=1_000_000.0))
        assert await limited.error() == (
            refused,
            321,
            REFUSED
            + "app stk-only has a quantity limit and no max_cash_quantity: cashQty orders are refused",
        )
        cash = await RawClient.connect(gate.port, 7, max_version=version)
        too_much = _place(cash, contract(), order("BUY", 0, "MKT", cashQty=5000.0))
        assert await cash.error() == (
            too_much,
            321,
            REFUSED + "cashQty 5000 is outside app cash's max_cash_quantity of 1000",
        )
        _place(cash, contract(), order("BUY", 1, "MKT", cashQty=500.0))
        await _message(cash, In.ORDER_STATUS)

    run(scenario())


# ---- finding 21: risk limits, attached orders, the order's clientId ----------------------------------


@BOTH
def test_orders_per_minute(start, version):
    gate = start(_app("rate", 8, max_orders_per_minute=3))

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        for _ in range(3):
            _place(client, contract(), order("BUY", 1, "MKT"))
            await _message(client, In.ORDER_STATUS)
        fourth = _place(client, contract(), order("BUY", 1, "MKT"))
        assert await client.error() == (
            fourth,
            321,
            REFUSED + "app rate has sent 3 orders in the last minute (max_orders_per_minute)",
        )

    run(scenario())


@BOTH
def test_notional_per_order(start, sim, version):
    gate = start(NOTIONAL)
    option = _option_con_id(sim)

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        big = _place(client, contract(), order("BUY", 2, "LMT", lmtPrice=600.0))
        assert await client.error() == (
            big,
            321,
            REFUSED + "notional 1200.0 is above app notional's max_notional_per_order of 1000",
        )
        await _qualify(client, option)  # its multiplier, 100, is learned
        opt = _place(client, contract("SPY", "OPT", conId=option), order("BUY", 1, "LMT", lmtPrice=20.0))
        assert (await client.error())[
            2
        ] == REFUSED + "notional 2000.0 is above app notional's max_notional_per_order of 1000"
        market = _place(client, contract(), order("BUY", 1, "MKT"))
        assert await client.error() == (market, 321, REFUSED + NOT_CAPPED.format(app="notional", type="MKT"))
        _place(client, contract(), order("BUY", 5, "LMT", lmtPrice=600.0, whatIf=True))  # a preview
        await _message(client, In.OPEN_ORDER)
        _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=600.0))
        await _message(client, In.ORDER_STATUS)
        return opt

    run(scenario())


@BOTH
def test_a_combo_under_max_notional_is_bounded_by_quantity_and_its_net_price(start, sim, version):
    gate = start(BOUNDED)
    call, put = _option_con_id(sim, "C"), _option_con_id(sim, "P")

    async def scenario():
        client = await RawClient.connect(gate.port, 9, max_version=version)
        await _qualify(client, call)
        spread = _bag(call, put, ratio=1)
        unknown_leg = _place(client, spread, order("BUY", 1, "LMT", lmtPrice=5.0))
        assert await client.error() == (
            unknown_leg,
            321,
            REFUSED
            + f"app bounded has max_notional_per_order: combo leg 2: conId {put} is unknown to the gate"
            " (qualify the contract with reqContractDetails first)",
        )
        await _qualify(client, put, req_id=78)
        wide = _place(client, spread, order("BUY", 3, "LMT", lmtPrice=-4.0))  # a credit: its size counts
        assert (await client.error())[:3] == (
            wide,
            321,
            REFUSED + "notional 1200.0 is above app bounded's max_notional_per_order of 1000",
        )
        within = _place(client, spread, order("BUY", 2, "LMT", lmtPrice=5.0))
        answer = await client.error()  # the simulator, not the gate, answers this combo
        assert answer[0] == within and not answer[2].startswith(REFUSED), answer

    run(scenario())


@BOTH
def test_open_orders(start, version):
    gate = start(_app("open", 8, max_open_orders=2))

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        for _ in range(3):  # margin previews are never open orders
            _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0, whatIf=True))
            await _message(client, In.OPEN_ORDER)
        first = _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        await _message(client, In.ORDER_STATUS)
        _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        await _message(client, In.ORDER_STATUS)
        third = _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        assert await client.error() == (
            third,
            321,
            REFUSED + "app open has 2 open orders (max_open_orders 2)",
        )
        client.send_ibapi(lambda c: c.placeOrder(first, contract(), order("BUY", 1, "LMT", lmtPrice=2.0)))
        await _message(client, In.ORDER_STATUS)  # a change to an open order passes
        client.send_ibapi(lambda c: c.cancelOrder(first, OrderCancel()))
        assert (await client.error())[:2] == (first, 202)
        _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        await _message(client, In.ORDER_STATUS)

    run(scenario())


@BOTH
def test_each_attached_order_has_its_own_audit_row(start, version):
    gate = start(TRADER)

    async def scenario():
        client = await RawClient.connect(gate.port, 1, max_version=version)
        parent = client.next_valid_id
        client.next_valid_id += 3
        legs = [
            (parent, order("BUY", 1, "LMT", lmtPrice=1.0, transmit=False)),
            (parent + 1, order("SELL", 1, "LMT", lmtPrice=900.0, parentId=parent, transmit=False)),
            (parent + 2, order("SELL", 1, "STP", auxPrice=0.5, parentId=parent, transmit=True)),
        ]
        for order_id, an_order in legs:
            client.send_ibapi(lambda c, oid=order_id, o=an_order: c.placeOrder(oid, contract(), o))
        await _alive(client)
        return parent

    parent = run(scenario())
    rows = query(gate.audit_db)["orders"]
    assert [(r["order_id"], r["action"], r["order_type"]) for r in rows] == [
        (parent, "BUY", "LMT"),
        (parent + 1, "SELL", "LMT"),
        (parent + 2, "SELL", "STP"),
    ]


def test_a_protobuf_order_for_another_client_id_is_refused(start, sim):
    gate = start(TRADER, OPTIONS)

    async def scenario():
        client = await RawClient.connect(gate.port, 4, max_version=PROTOBUF)
        spoofed = _place(client, contract(), order("BUY", 1, "MKT", clientId=1))
        assert await client.error() == (
            spoofed,
            321,
            REFUSED + "the order's clientId 1 is not this connection's client id 4",
        )

    run(scenario())
    assert sim.server.broker.orders == {}


# ---- the paper/live interlock ------------------------------------------------------------------------


@pytest.mark.parametrize("gate_mode, sim_mode", [("live", "paper"), ("paper", "live")])
def test_the_interlock_refuses_every_app_when_the_gateway_is_of_the_other_mode(
    start_sim, short_dir, gate_mode, sim_mode
):
    sim = start_sim(mode=sim_mode)
    data = config_data(short_dir, sim.port, mode=gate_mode, apps=[TRADER])
    gate = GateProcess(write_config(short_dir / "gate.yml", data))
    try:

        async def scenario():
            client = await RawClient.connect(gate.port, 1, max_version=TEXT)
            order_id = _place(client, contract(), order("BUY", 1, "MKT"))
            seen = await client.read_until_closed()
            assert In.ORDER_STATUS not in seen
            return order_id

        run(scenario())
        gate.wait_for("paper/live interlock tripped")
        status = json.loads(gate.cli("gate", "status", "--json").stdout)
        assert sim_mode in status["interlock"] and "account" in status["interlock"]
        assert sim.server.broker.orders == {}
    finally:
        gate.stop()
    [row] = query(short_dir / "audit.sqlite")["connections"]
    assert row["reason"].startswith("paper/live interlock: ")


def test_the_start_up_probe_trips_the_interlock(start_sim, short_dir):
    sim = start_sim(mode="live")
    data = config_data(short_dir, sim.port, mode="paper", apps=[TRADER], probe_client_id=9998)
    gate = GateProcess(write_config(short_dir / "gate.yml", data))
    try:
        gate.wait_for("paper/live interlock tripped: the paper gateway reports live account")
        status = json.loads(gate.cli("gate", "status", "--json").stdout)
        assert status["interlock"].startswith("the paper gateway reports live account")

        async def scenario():
            client = await open_raw(gate.port, 1)
            return await client.error()

        req_id, code, text = run(scenario())
        assert (req_id, code) == (-1, 502) and text.startswith(REFUSED + "paper/live interlock tripped: ")
    finally:
        gate.stop()


def test_the_interlock_shows_in_the_metrics_and_ibgw_health(start_gate, start_sim):
    sim = start_sim(mode="live")
    gate = start_gate(sim.port)  # a paper gate
    assert agent.gate_flags(gate.gate.metrics_port) == {"halted": False, "interlock_tripped": False}

    async def scenario():
        client = await open_raw(gate.port, 1)
        await client.read_until_closed()

    run(scenario())
    flags = agent.gate_flags(gate.gate.metrics_port)  # what `ibgw health` reads on the host
    assert flags == {"halted": False, "interlock_tripped": True}
    [finding] = health.judge_gates({"paper": flags, "live": None})
    assert (finding.severity, finding.check, finding.subject) == ("down", "interlock", "paper gate")
    assert health.EXIT[finding.severity] == 2


def test_open_orders_are_listed_again_at_each_logon(start, sim):
    """A reconnect neither resets the count (no way around the limit) nor keeps orders that ended
    while the app was away (no app wedged by a stale count)."""
    gate = start(TRADER, _app("open", 8, max_open_orders=2))

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=PROTOBUF)
        for _ in range(2):
            _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
            await _message(client, In.ORDER_STATUS)
        await client.close()
        await until(lambda: 8 not in sim.server.sessions)  # else client id 8 is still taken (326)
        again = await RawClient.connect(gate.port, 8, max_version=TEXT)
        third = _place(again, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        assert await again.error() == (third, 321, REFUSED + "app open has 2 open orders (max_open_orders 2)")
        await again.close()
        await until(lambda: 8 not in sim.server.sessions)
        trader = await RawClient.connect(gate.port, 1, max_version=TEXT)
        trader.send_ibapi(lambda c: c.reqGlobalCancel(OrderCancel()))  # the orders end while app open is away
        await until(lambda: not sim.server.broker.open_orders())
        back = await RawClient.connect(gate.port, 8, max_version=PROTOBUF)
        for _ in range(2):
            _place(back, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
            await _message(back, In.ORDER_STATUS)

    run(scenario())


# ---- review 1: what max_notional_per_order can and cannot bound ---------------------------------------


def _forwarded(gate) -> list[tuple]:
    return [d for d in _decisions(gate) if d[2] != "refused"]


@BOTH
def test_notional_refuses_order_types_a_limit_price_does_not_cap(start, version):
    """IB ignores lmtPrice on MKT and STP orders: a token limit price priced them at nothing."""
    gate = start(NOTIONAL)

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        for order_type, fields in (
            ("MKT", {"lmtPrice": 0.0}),
            ("STP", {"auxPrice": 600.0, "lmtPrice": 0.001}),
        ):
            refused = _place(client, contract(), order("BUY", 1_000_000, order_type, **fields))
            assert await client.error() == (
                refused,
                321,
                REFUSED + NOT_CAPPED.format(app="notional", type=order_type),
            )
        token = _place(client, contract(), order("BUY", 1_000_000, "LMT", lmtPrice=0.0))
        assert await client.error() == (
            token,
            321,
            REFUSED + "app notional has max_notional_per_order: the limit price of a LMT BUY must be a "
            "positive number, not 0.0",
        )
        _place(client, contract(), order("BUY", 1, "STP LMT", auxPrice=600.0, lmtPrice=601.0))
        _place(client, contract(), order("BUY", 1, "lmt", lmtPrice=600.0))  # any case of a capped type
        await _alive(client)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["refused"] * 3 + ["forwarded"] * 2


@BOTH
def test_notional_refuses_a_sell_unless_quantity_bounds_it(start, version):
    """A SELL's limit is a floor: 1e6 SPY at 0.001 'cost' 1000."""
    gate = start(NOTIONAL, BOUNDED)

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        for action in ("SELL", "SSHORT"):
            refused = _place(client, contract(), order(action, 1_000_000, "LMT", lmtPrice=0.001))
            assert await client.error() == (
                refused,
                321,
                REFUSED + "app notional has max_notional_per_order and no max_order_quantity: "
                f"a {action}'s limit price is a floor, not a cap, so its notional cannot be bounded",
            )
        bounded = await RawClient.connect(gate.port, 9, max_version=version)
        above = _place(bounded, contract(), order("SELL", 10, "LMT", lmtPrice=600.0))  # at least 6000
        assert await bounded.error() == (
            above,
            321,
            REFUSED + "notional 6000.0 is above app bounded's max_notional_per_order of 1000",
        )
        _place(bounded, contract(), order("SELL", 1000, "MKT"))  # max_order_quantity bounds it
        await _message(bounded, In.ORDER_STATUS)

    run(scenario())


@BOTH
def test_notional_counts_cash_qty_and_refuses_non_positive_quantities(start, version):
    gate = start(NOTIONAL)

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        cash = _place(client, contract(), order("BUY", 0, "LMT", lmtPrice=600.0, cashQty=50_000_000.0))
        assert await client.error() == (
            cash,
            321,
            REFUSED + "notional 50000000.0 is above app notional's max_notional_per_order of 1000",
        )
        for quantity in (-1_000_000, 0):
            negative = _place(client, contract(), order("BUY", quantity, "LMT", lmtPrice=600.0))
            assert await client.error() == (
                negative,
                321,
                REFUSED
                + "app notional has order limits: an order must give a positive quantity or a cashQty",
            )
        _place(client, contract(), order("BUY", 0, "LMT", lmtPrice=600.0, cashQty=900.0))
        await _alive(client)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["refused"] * 3 + ["forwarded"]


@BOTH
def test_notional_refuses_a_combo_unless_quantity_bounds_it(start, sim, version):
    """BUY call + SELL put at one strike is about 100 shares a unit; a net 0.01 priced 900 units at 900."""
    gate = start(NOTIONAL, BOUNDED)
    call, put = _option_con_id(sim, "C"), _option_con_id(sim, "P")
    synthetic = _bag(call, put, ratio=1)
    synthetic.comboLegs[1].action = "SELL"

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        await _qualify(client, call, 77)
        await _qualify(client, put, 78)
        refused = _place(client, synthetic, order("BUY", 900, "LMT", lmtPrice=0.01))
        assert await client.error() == (
            refused,
            321,
            REFUSED + "app notional has max_notional_per_order and no max_order_quantity: "
            "a combo's net price hides its legs' size, so its notional cannot be bounded",
        )
        bounded = await RawClient.connect(gate.port, 9, max_version=version)
        within = _place(bounded, synthetic, order("BUY", 900, "LMT", lmtPrice=0.01))  # quantity bounds it
        answer = await bounded.error()  # the simulator, not the gate, answers this combo
        assert answer[0] == within and not answer[2].startswith(REFUSED), answer

    run(scenario())


@BOTH
def test_notional_refuses_an_exercise_unless_quantity_bounds_it(start, sim, version):
    gate = start(NOTIONAL, BOUNDED)
    call = _option_con_id(sim, "C")
    option = contract("SPY", "OPT", conId=call)

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        client.send_ibapi(lambda c: c.exerciseOptions(5, option, 1, 1_000_000, "", 0, "", "", False))
        assert await client.error() == (
            5,
            321,
            REFUSED + "app notional has max_notional_per_order and no max_order_quantity: "
            "an exercise pays the strike, so its notional cannot be bounded",
        )
        bounded = await RawClient.connect(gate.port, 9, max_version=version)
        bounded.send_ibapi(lambda c: c.exerciseOptions(6, option, 1, 1_000_000, "", 0, "", "", False))
        assert await bounded.error() == (
            6,
            321,
            REFUSED + "quantity 1000000 is above app bounded's limit of 1000",
        )
        bounded.send_ibapi(lambda c: c.exerciseOptions(7, option, 1, 10, "", 0, "", "", False))
        await _alive(bounded)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["refused", "refused", "forwarded"]


@BOTH
def test_notional_takes_the_larger_multiplier_and_refuses_unqualified_con_ids(start, sim, version):
    """An unqualified conId was priced by its declared secType (STK: x1); a declared multiplier of 0.01 won
    over the gateway's 100 (now refused: it is not the gateway's)."""
    gate = start(NOTIONAL)
    call = _option_con_id(sim, "C")

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        disguised = _place(client, contract("SPY", "STK", conId=call), order("BUY", 100, "LMT", lmtPrice=5.0))
        assert await client.error() == (
            disguised,
            321,
            REFUSED + f"app notional has max_notional_per_order: conId {call} is unknown to the gate, so its "
            "multiplier cannot be checked (qualify the contract with reqContractDetails first)",
        )
        await _qualify(client, call)  # the gate learns OPT, multiplier 100
        declared = _place(
            client,
            contract("SPY", "OPT", conId=call, multiplier="0.01"),
            order("BUY", 100, "LMT", lmtPrice=5.0),
        )
        assert await client.error() == (
            declared,
            321,
            REFUSED + "app notional has max_notional_per_order: the order's multiplier '0.01' is not the "
            f"gateway's '100' for conId {call}",
        )
        # no multiplier: the gateway's, for the secType the gateway gave
        small = _place(client, contract("SPY", "STK", conId=call), order("BUY", 100, "LMT", lmtPrice=5.0))
        assert await client.error() == (
            small,
            321,
            REFUSED + "notional 50000.0 is above app notional's max_notional_per_order of 1000",
        )

    run(scenario())


# ---- review 1: a request the gate reads differently from the gateway is not judged -----------------------


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_an_infinite_scale_increment_no_longer_shifts_whatif(start):
    """ibapi sends 7 scale fields for scalePriceIncrement=inf; the gate skipped them only below it, and read
    clearingAccount ('1') as whatIf: a market order passed as a margin preview. (A limited app's scale
    order is now refused outright; the reader must still read whatIf where the gateway does.)"""
    gate = start(NOTIONAL)
    shifted = order("BUY", 1_000_000, "MKT", scalePriceIncrement=math.inf, clearingAccount="1")
    frame = ibapi_request(TEXT, lambda c: c.placeOrder(1, contract(), shifted))
    read = requests.read(TEXT, codec.decode(TEXT, frame[4:]))
    assert (read.what_if, read.scale_fields, read.unread_fields) == (False, ("scalePriceIncrement",), 0)

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=TEXT)
        refused = _place(client, contract(), shifted)
        assert await client.error() == (
            refused,
            321,
            REFUSED + "app notional has limits: a scale order (scalePriceIncrement set) has components TWS "
            "places and reprices itself, so the gate cannot judge it",
        )

    run(scenario())
    rows = query(gate.audit_db)["orders"]
    assert [(r["order_type"], r["decision"]) for r in rows] == [("MKT", "refused")]


def test_a_text_order_with_fields_left_over_is_refused_as_unreadable(start):
    """Fields after the layout's end mean the gate read some field where the gateway will not."""
    gate = start(TRADER)

    async def scenario():
        client = await RawClient.connect(gate.port, 1, max_version=TEXT)
        order_id = client.next_valid_id
        frame = ibapi_request(TEXT, lambda c: c.placeOrder(order_id, contract(), order("BUY", 1, "MKT")))
        client.writer.write(_frame(frame[4:] + b"1\x00"))
        assert await client.error() == (
            order_id,
            321,
            REFUSED + "unreadable placeOrder: 1 fields after the end of the order's layout",
        )
        await _alive(client)

    run(scenario())


def test_a_lower_case_bag_is_judged_by_its_legs(start, sim):
    """The Java client (so the gateway) takes combo legs for any case of BAG; the gate read them only for
    "BAG", so a "bag" carried legs the gate never saw."""
    gate = start(STK_ONLY)
    call = _option_con_id(sim, "C")

    async def scenario():
        client = await RawClient.connect(gate.port, 3, max_version=TEXT)
        await _qualify(client, call)
        order_id = client.next_valid_id
        frame = ibapi_request(
            TEXT, lambda c: c.placeOrder(order_id, _bag(call, ratio=1), order("BUY", 1, "LMT", lmtPrice=1.0))
        )
        client.writer.write(frame.replace(b"\x00BAG\x00", b"\x00bag\x00", 1))
        assert await client.error() == (
            order_id,
            321,
            REFUSED
            + f"combo leg 1: secType OPT (conId {call}) is not allowed for app stk-only (allowed: STK, BAG)",
        )

    run(scenario())


def test_protobuf_attached_orders_are_refused_for_a_limited_app(start):
    """PlaceOrderRequest.attachedOrders (server 218 on) asks the gateway for a stop loss and a profit taker
    in one message: the gate judged, counted and audited one order."""
    assert PROTOBUF >= MIN_SERVER_VER_ATTACHED_ORDERS
    gate = start(_app("rate", 8, max_orders_per_minute=1, max_open_orders=1), TRADER)

    def bracket(oid: int):
        return order(
            "BUY",
            1,
            "LMT",
            lmtPrice=1.0,
            slOrderId=oid + 1,
            slOrderType="MKT",
            ptOrderId=oid + 2,
            ptOrderType="MKT",
        )

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=PROTOBUF)
        refused = _place(client, contract(), bracket(client.next_valid_id))
        assert await client.error() == (
            refused,
            321,
            REFUSED
            + "attached orders in one message are not judged: send them as separate placeOrder messages",
        )
        _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))  # no attached orders: judged
        await _message(client, In.ORDER_STATUS)
        trader = await RawClient.connect(gate.port, 1, max_version=PROTOBUF)
        _place(trader, contract(), bracket(trader.next_valid_id))  # an app without limits may
        await _message(trader, In.ORDER_STATUS)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["refused", "forwarded", "forwarded"]


@BOTH
def test_notional_counts_the_discretionary_amount_and_refuses_adjustable_orders(start, version):
    """A discretionary amount lets a BUY fill above its limit price; an adjustable STP LMT becomes a plain
    stop (a market order) once triggered."""
    gate = start(NOTIONAL)

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        discretion = _place(
            client, contract(), order("BUY", 1, "LMT", lmtPrice=600.0, discretionaryAmt=500.0)
        )
        assert await client.error() == (
            discretion,
            321,
            REFUSED + "notional 1100.0 is above app notional's max_notional_per_order of 1000",
        )
        adjusted = order("BUY", 1, "STP LMT", auxPrice=600.0, lmtPrice=601.0, adjustedOrderType="STP")
        adjustable = _place(client, contract(), adjusted)
        assert await client.error() == (
            adjustable,
            321,
            REFUSED
            + "app notional has max_notional_per_order: an adjustable order becomes STP once triggered, "
            "so its limit price does not cap it",
        )

    run(scenario())


# ---- review 2: what the gate trusts of an order, and what TWS sizes on its own -------------------------


@BOTH
def test_a_declared_tiny_multiplier_does_not_shrink_a_notional(start, sim, version):
    """The order's own multiplier ('0.000001') priced 1e6 SPY at 600 as 600: the secType's usual multiplier
    is a floor, a declared one that is not the gateway's is refused, and a secType with no usual one and
    nothing learned is refused even when the order declares one."""
    gate = start(NOTIONAL)
    call = _option_con_id(sim, "C")

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        await _qualify(client, SPY_CON_ID)
        for con_id in (SPY_CON_ID, 0):
            spy = contract("SPY", "STK", conId=con_id, multiplier="0.000001")
            tiny = _place(client, spy, order("BUY", 1_000_000, "LMT", lmtPrice=600.0))
            assert await client.error() == (
                tiny,
                321,
                REFUSED + "notional 600000000.0 is above app notional's max_notional_per_order of 1000",
            )
        await _qualify(client, call, 78)  # the gateway gives 100
        smaller = _place(
            client, contract("SPY", "OPT", conId=call, multiplier="10"), order("BUY", 1, "LMT", lmtPrice=1.0)
        )
        assert await client.error() == (
            smaller,
            321,
            REFUSED
            + f"app notional has max_notional_per_order: the order's multiplier '10' is not the gateway's "
            f"'100' for conId {call}",
        )
        future = contract("ES", "FUT", multiplier="0.000001", lastTradeDateOrContractMonth="202612")
        unknown = _place(client, future, order("BUY", 1, "LMT", lmtPrice=6000.0))
        assert await client.error() == (
            unknown,
            321,
            REFUSED + "app notional has max_notional_per_order; the multiplier of this FUT is unknown "
            "(the gateway gave none for its conId and its secType has no usual one)",
        )
        same = contract("SPY", "OPT", conId=call, multiplier="100.0")  # the gateway's, spelt otherwise
        _place(client, same, order("BUY", 1, "LMT", lmtPrice=1.0))
        await _message(client, In.ORDER_STATUS)

    run(scenario())
    assert sim.server.broker.orders.keys() and all(o.quantity == 1 for o in sim.server.broker.orders.values())


LIMITED = _app("limited", 9, max_order_quantity=10, max_notional_per_order=1000, allowed_sec_types=["STK"])


@BOTH
def test_hedge_orders_are_refused_for_a_limited_app(start, sim, version):
    """TWS sizes a hedge child itself (a pair trade's is its parent's quantity x hedgeParam): the gate judged
    its token totalQuantity of 1 and forwarded a hedgeParam of 1e6."""
    gate = start(LIMITED, TRADER)

    async def scenario():
        client = await RawClient.connect(gate.port, 9, max_version=version)
        await _qualify(client, SPY_CON_ID)
        spy = contract("SPY", "STK", conId=SPY_CON_ID)
        parent = _place(client, spy, order("BUY", 10, "LMT", lmtPrice=1.0, transmit=False))
        hedge = order("SELL", 1, "LMT", lmtPrice=1.0, parentId=parent, hedgeType="P", hedgeParam="1000000")
        child = _place(client, spy, hedge)
        assert await client.error() == (
            child,
            321,
            REFUSED
            + "app limited has limits: a hedge order (hedgeType P) is sized by TWS from its parent and "
            "hedgeParam, so the gate cannot judge it",
        )
        trader = await RawClient.connect(gate.port, 1, max_version=version)
        _place(trader, spy, order("BUY", 1, "LMT", lmtPrice=1.0, hedgeType="D", hedgeParam="0.5"))
        await _alive(trader)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["forwarded", "refused", "forwarded"]


@BOTH
def test_scale_orders_are_refused_for_a_limited_app(start, version):
    """A scale order's price adjustment lifts a BUY's price each interval, and its profit offset and auto
    reset make TWS place orders the gate never sees: the starting price was all it priced."""
    gate = start(LIMITED)
    ladders = [
        {"scalePriceIncrement": 0.01, "scalePriceAdjustValue": 1000.0, "scalePriceAdjustInterval": 1},
        {"scalePriceIncrement": 0.01, "scaleProfitOffset": 0.01, "scaleAutoReset": True},
        {"scaleInitLevelSize": 1, "scaleSubsLevelSize": 1},
        {"scaleTable": "1/0.01"},
    ]

    async def scenario():
        client = await RawClient.connect(gate.port, 9, max_version=version)
        await _qualify(client, SPY_CON_ID)
        spy = contract("SPY", "STK", conId=SPY_CON_ID)
        for fields in ladders:
            refused = _place(client, spy, order("BUY", 10, "LMT", lmtPrice=1.0, **fields))
            req_id, code, text = await client.error()
            assert (req_id, code) == (refused, 321)
            assert text == (
                REFUSED + f"app limited has limits: a scale order ({', '.join(fields)} set) has components "
                "TWS places and reprices itself, so the gate cannot judge it"
            )
        _place(client, spy, order("BUY", 10, "LMT", lmtPrice=1.0))
        await _message(client, In.ORDER_STATUS)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["refused"] * 4 + ["forwarded"]


@BOTH
def test_allocations_that_may_size_the_order_are_refused_under_quantity_limits(start, version):
    """An FA order's percentage change, model or group method can make TWS size it, not totalQuantity."""
    gate = start(LIMITED)
    sizing = [
        ({"faGroup": "all", "faMethod": "PctChange", "faPercentage": "100"}, "faPercentage '100'"),
        ({"faGroup": "all", "faMethod": "ContractsOrShares"}, "faMethod 'ContractsOrShares'"),
        ({"faGroup": "all"}, "faGroup 'all' with the group's own method"),
        ({"modelCode": "growth"}, "modelCode 'growth'"),
    ]

    async def scenario():
        client = await RawClient.connect(gate.port, 9, max_version=version)
        for fields, why in sizing:
            refused = _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0, **fields))
            assert await client.error() == (
                refused,
                321,
                REFUSED
                + f"app limited has a quantity or notional limit: an allocation ({why}) may change the "
                "order's quantity "
                "(allowed: faGroup with faMethod EqualQuantity, Equal, NetLiq or AvailableEquity)",
            )
        _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0, faGroup="all", faMethod="NetLiq"))
        await _alive(client)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["refused"] * 4 + ["forwarded"]


@BOTH
def test_an_error_on_a_read_with_an_open_order_s_id_does_not_end_the_order(start, sim, version):
    """Reads share the order ids' number space: error 200 for a reqContractDetails whose reqId was an open
    order's made the gate forget the order, past max_open_orders. An error still ends an order the gateway
    rejected before giving it any status."""
    gate = start(_app("open", 8, max_open_orders=1))

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=version)
        rejected = _place(client, contract("NOSUCHSYMBOL"), order("BUY", 1, "LMT", lmtPrice=1.0))
        assert (await client.error())[:2] == (rejected, 200)  # no status: the error ends it
        placed = _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        await _message(client, In.ORDER_STATUS)
        client.send_ibapi(lambda c: c.reqContractDetails(placed, contract("NOSUCHSYMBOL", "STK")))
        assert (await client.error())[:2] == (placed, 200)
        refused = _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
        assert await client.error() == (
            refused,
            321,
            REFUSED + "app open has 1 open orders (max_open_orders 1)",
        )
        return placed

    placed = run(scenario())
    assert sorted(o.order_id for o in sim.server.broker.open_orders()) == [placed]


@pytest.mark.parametrize("spelling", ["true", "True", " 1", "1_0", "2"])
def test_whatif_spellings_ibapi_never_sends_make_an_order_unreadable(start, spelling):
    """ibapi and ib_async send booleans as 1 or 0. The gate also read 'true', 'True' and whatever Python's
    int() takes (' 1', '1_0') as true, so a MKT BUY of 1e6 passed max_notional_per_order as a 'margin
    preview' that a gateway reading the field otherwise would place."""
    gate = start(NOTIONAL)

    def fields(what_if: bool) -> list[str]:
        data = ibapi_request(
            TEXT, lambda c: c.placeOrder(1, contract(), order("BUY", 1_000_000, "MKT", whatIf=what_if))
        )
        return data[4:].decode().split("\0")[1:-1]  # after the text id "3"

    on, off = fields(True), fields(False)
    [index] = [i for i, (a, b) in enumerate(zip(on, off, strict=True)) if a != b]

    async def scenario():
        client = await RawClient.connect(gate.port, 8, max_version=TEXT)
        spoofed = list(off)
        spoofed[0], spoofed[index] = str(client.next_valid_id), spelling
        client.writer.write(codec.encode_text(TEXT, Out.PLACE_ORDER, spoofed))
        assert await client.error() == (
            -1,
            321,
            REFUSED + f"unreadable placeOrder: field {index + 1}: not a boolean (0 or 1): {spelling!r}",
        )
        await _alive(client)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["refused"]


def _with_unknown_field(order_id: int, where: str) -> bytes:
    """A protobuf placeOrder of 1 SPY whose Order or Contract carries field 999 (unknown to ibapi)."""
    from ibapi.protobuf import PlaceOrderRequest_pb2

    pb = PlaceOrderRequest_pb2.PlaceOrderRequest(orderId=order_id)
    pb.contract.conId, pb.contract.symbol, pb.contract.secType = SPY_CON_ID, "SPY", "STK"
    pb.contract.exchange, pb.contract.currency = "SMART", "USD"
    pb.order.action, pb.order.totalQuantity, pb.order.orderType = "BUY", "1", "LMT"
    pb.order.lmtPrice, pb.order.transmit = 1.0, True
    number = {"contract": 2, "order": 3}[where]
    inner = getattr(pb, where).SerializeToString() + bytes([0xB8, 0x3E, 0x01])  # field 999 = 1
    pb.ClearField(where)
    body = pb.SerializeToString() + bytes([number << 3 | 2, len(inner)]) + inner
    return codec.encode_protobuf(Out.PLACE_ORDER, body)


def test_a_protobuf_order_with_unknown_fields_is_refused_for_a_limited_app(start):
    """A text placeOrder with fields left over is refused as unreadable; a protobuf one whose Order or
    Contract carries a field ibapi's schema lacks (a newer gateway's attribute) was forwarded unjudged."""
    gate = start(LIMITED, TRADER)

    async def scenario():
        client = await RawClient.connect(gate.port, 9, max_version=PROTOBUF)
        await _qualify(client, SPY_CON_ID)
        for where in ("order", "contract"):
            order_id = client.next_valid_id
            client.next_valid_id += 1
            client.writer.write(_with_unknown_field(order_id, where))
            assert await client.error() == (
                order_id,
                321,
                REFUSED + "app limited has limits: the placeOrder carries fields the gate does not know "
                f"(in {where}), so it cannot be judged",
            )
        trader = await RawClient.connect(gate.port, 1, max_version=PROTOBUF)
        trader.writer.write(_with_unknown_field(trader.next_valid_id, "order"))  # no limit: it passes
        await _message(trader, In.ORDER_STATUS)

    run(scenario())
    assert [d[2] for d in _decisions(gate)] == ["refused", "refused", "forwarded"]
