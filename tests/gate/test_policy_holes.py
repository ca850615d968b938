"""Issue 13's order-policy findings, each replayed through `ibgw gate` (a process) in front of `ibgw sim`,
with requests built by ibapi's own encoder at a text (200) and a protobuf (226) version."""

import json
import time

import pytest
from ibapi.contract import ComboLeg
from ibapi.order_cancel import OrderCancel
from ibapi.protobuf.UpdateConfigRequest_pb2 import UpdateConfigRequest

from ibgw_provision.gate.audit import query
from ibgw_provision.observe import health
from ibgw_provision.provision import agent
from ibgw_provision.tws import versions
from ibgw_provision.tws.messages import In

from ..kit.gate import LOOPBACK, GateProcess, config_data, open_raw, run, write_config
from ..kit.sim import STEP, RawClient, contract, order, until

TEXT, PROTOBUF = versions.PROTOBUF - 1, versions.LATEST
BOTH = pytest.mark.parametrize("version", [TEXT, PROTOBUF], ids=["text", "protobuf"])
REFUSED = "refused by ibgw gate: "
SPY_CON_ID = 756733


def _app(name: str, client_id: int, **rules) -> dict:
    return {"name": name, "client_id": client_id, "sources": [LOOPBACK], "read_only": False} | rules


TRADER = _app("trader", 1)
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
    gate = start(_app("notional", 8, max_notional_per_order=1000))
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
        assert await client.error() == (
            market,
            321,
            REFUSED + "app notional has max_notional_per_order: a MKT order without a limit price cannot be "
            "priced (send a limit order)",
        )
        call, put = option, _option_con_id(sim, "P")
        spread = _bag(call, put, ratio=1)
        unknown_leg = _place(client, spread, order("BUY", 1, "LMT", lmtPrice=5.0))
        assert (await client.error())[2] == (
            REFUSED + "app notional has max_notional_per_order; the multiplier of this BAG is unknown"
        )
        await _qualify(client, put, req_id=78)
        wide = _place(client, spread, order("BUY", 3, "LMT", lmtPrice=-4.0))  # a credit: its size counts
        assert (await client.error())[2] == (
            REFUSED + "notional 1200.0 is above app notional's max_notional_per_order of 1000"
        )
        within = _place(client, spread, order("BUY", 2, "LMT", lmtPrice=5.0))
        answer = await client.error()  # the simulator, not the gate, answers this combo
        assert answer[0] == within and not answer[2].startswith(REFUSED), answer
        _place(client, contract(), order("BUY", 5, "LMT", lmtPrice=600.0, whatIf=True))  # a preview
        await _message(client, In.OPEN_ORDER)
        _place(client, contract(), order("BUY", 1, "LMT", lmtPrice=600.0))
        await _message(client, In.ORDER_STATUS)
        return opt, unknown_leg, wide

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
