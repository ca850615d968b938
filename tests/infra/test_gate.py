"""`ibgw gate` as provisioned on gw in the lab: apps -> HAProxy -> (PROXY v2) -> gate -> simulated gateway."""

from __future__ import annotations

import json
import time

import pytest
from ib_async import IB, MarketOrder, Stock

from ibgw_provision.provision import layout

from .conftest import GW, HOST, NAME, OPERATOR, fresh_host, ibgw, suite_inventory

pytestmark = pytest.mark.lab
PAPER = HOST.gateway("paper")
CONFIG = layout.gate_config("paper")
SPY = Stock("SPY", "SMART", "USD")


@pytest.fixture(scope="module")
def inv_path(lab, tmp_path_factory):
    assert HOST.front.gate
    inv = suite_inventory(tmp_path_factory.mktemp("gate"))
    fresh_host(lab, inv)
    return str(inv)


@pytest.fixture
def host(inv_path, ssh_host):
    return ssh_host


class App:
    """An ib_async app connected from here (the lab's operator) through gw's front, collecting the
    errors it is told."""

    def __init__(self, client_id: int, qualify: bool = True):
        self.ib, self.errors = IB(), []
        self.ib.RequestTimeout = 15  # a request the gate refuses may get no answer ib_async waits for
        self.ib.errorEvent += lambda req_id, code, text, contract: self.errors.append((req_id, code, text))
        self.ib.connect(GW, PAPER.front_port, clientId=client_id, timeout=15)
        (self.spy,) = self.ib.qualifyContracts(SPY) if qualify else (SPY,)

    def order(self, quantity: float = 1):
        trade = self.ib.placeOrder(self.spy, MarketOrder("BUY", quantity))
        deadline = time.monotonic() + 15
        while not trade.isDone() and not self._refused(trade.order.orderId):
            assert time.monotonic() < deadline, trade.log
            self.ib.sleep(0.05)
        return trade

    def _refused(self, order_id: int) -> bool:
        return any(req_id == order_id for req_id, _, _ in self.errors)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.ib.disconnect()


def _audit(host, *args: str) -> dict:
    return json.loads(
        host.check_output(f"{layout.VENV}/bin/ibgw audit --config {CONFIG} --json {' '.join(args)}")
    )


def test_gates_run_behind_the_front(host):
    for gw in HOST.gateways:
        assert host.service(layout.gate_unit(gw.mode)).is_running
        assert host.socket(f"tcp://127.0.0.1:{gw.gate_port}").is_listening


def test_a_registered_app_trades_and_is_audited_under_its_name(host):
    with App(1) as app:
        trade = app.order(2)
        assert trade.orderStatus.status == "Filled", app.errors
        order_id = trade.order.orderId
    rows = [r for r in _audit(host, "--app", "smart-lean-0dte")["orders"] if r["order_id"] == order_id]
    assert [(r["decision"], r["symbol"], r["quantity"]) for r in rows] == [("forwarded", "SPY", "2")]
    connections = _audit(host, "--app", "smart-lean-0dte")["connections"]
    assert connections and connections[-1]["source"].startswith(OPERATOR)  # the real source, via PROXY v2


def test_a_read_only_app_streams_but_its_orders_are_refused(host):
    with App(2) as app:
        ticker = app.ib.reqMktData(app.spy)
        deadline = time.monotonic() + 10
        while ticker.last != ticker.last or not ticker.last:  # NaN until the first tick
            assert time.monotonic() < deadline, "no market data"
            app.ib.sleep(0.05)
        trade = app.order()
        assert trade.orderStatus.status != "Filled"
        refusal = [(code, text) for req_id, code, text in app.errors if req_id == trade.order.orderId]
        assert refusal and refusal[0][0] == 321 and "read-only" in refusal[0][1]
        assert app.ib.isConnected()
    rows = [
        r for r in _audit(host, "--app", "python-research")["orders"] if r["order_id"] == trade.order.orderId
    ]
    assert rows and rows[0]["decision"] == "refused" and "read-only" in rows[0]["reason"]


def test_an_unregistered_client_id_never_reaches_the_gateway(host):
    ib, errors = IB(), []
    ib.errorEvent += lambda req_id, code, text, contract: errors.append((code, text))
    with pytest.raises((ConnectionError, TimeoutError, OSError)):
        ib.connect(GW, PAPER.front_port, clientId=42, timeout=5)
    ib.disconnect()
    assert any("not registered" in text for _, text in errors), errors
    assert "client 42 " not in host.file(f"{layout.log_dir('paper')}/sim.log").content_string


def test_the_kill_switch_refuses_new_orders_until_resumed(host):
    host.check_output(f"{layout.VENV}/bin/ibgw gate halt --config {CONFIG}")
    try:
        with App(1) as app:
            trade = app.order()
            assert trade.orderStatus.status != "Filled"
            assert any("halt" in text.lower() for _, _, text in app.errors), app.errors
    finally:
        host.check_output(f"{layout.VENV}/bin/ibgw gate resume --config {CONFIG}")
    with App(1) as app:
        assert app.order().orderStatus.status == "Filled"


def test_health_passes_through_the_gate(inv_path):
    proc = ibgw("health", NAME, "-i", inv_path, "--json", timeout=120)
    report = json.loads(proc.stdout)["hosts"][0]
    assert all(g["front"]["ok"] for g in report["gateways"]), report["gateways"]
    assert {layout.gate_unit(g.mode) for g in HOST.gateways} <= {u["name"] for u in report["units"]}
