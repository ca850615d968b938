"""The host follows the inventory both ways: provision A, then B, check the host, B again (0 changed),
then A again (it converges back). On gw in the lab, with its live nftables rules: the firewall goes
off and on again too."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
import yaml
from ib_async import IB

from ibgw_provision.provision import layout

from .conftest import GW, HOST, NAME, OPERATOR, fresh_host, ibgw, recap, suite_inventory

pytestmark = pytest.mark.lab
PAPER, LIVE = HOST.gateway("paper"), HOST.gateway("live")


@pytest.fixture(scope="module")
def base(lab, tmp_path_factory):
    inv = suite_inventory(tmp_path_factory.mktemp("transitions"))
    fresh_host(lab, inv)
    return inv


@pytest.fixture
def host(base, ssh_host):
    return ssh_host


def variant(base: Path, name: str, edit) -> str:
    doc = yaml.safe_load(base.read_text())
    edit(doc["hosts"][NAME])
    path = base.parent / f"{name}.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def converge(inv: str) -> None:
    """Provision, then provision again: the second run changes nothing."""
    first = ibgw("provision", NAME, "-i", inv)
    assert first.returncode == 0, first.stdout + first.stderr
    again = ibgw("provision", NAME, "-i", inv)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout


def serves(port: int, client_id: int = 1) -> bool:
    """A real ib_async app, here (the operator), gets its accounts through gw's front."""
    ib = IB()
    try:
        ib.connect(GW, port, clientId=client_id, timeout=15)
        return bool(ib.managedAccounts())
    finally:
        ib.disconnect()


def gone(host, unit: str) -> bool:
    """Stopped, and disabled or deleted."""
    active = host.run(f"systemctl is-active {unit}").stdout.strip()
    enabled = host.run(f"systemctl is-enabled {unit}").stdout.strip()
    return active != "active" and enabled != "enabled"


def test_haproxy_to_nginx_and_back(base, host):
    nginx = variant(base, "nginx", lambda h: h["front"].update(kind="nginx"))
    converge(nginx)
    assert gone(host, "haproxy.service") and host.service("nginx.service").is_running
    assert serves(PAPER.front_port)
    converge(str(base))
    assert gone(host, "nginx.service") and host.service("haproxy.service").is_running
    assert serves(PAPER.front_port)


def _paper_only(h: dict) -> None:
    h["gateways"] = h["gateways"][:1]
    for app in h["apps"]:
        app["modes"] = ["paper"]


def test_two_gateways_to_paper_only_and_back(base, host):
    live_units = [layout.gateway_unit("live"), layout.gate_unit("live")]
    converge(variant(base, "paper-only", _paper_only))
    for unit in live_units:
        assert gone(host, unit) and not host.file(f"{layout.UNIT_DIR}/{unit}").exists
    for path in (layout.gate_config("live"), layout.settings_dir("live")):
        assert not host.file(path).exists, path
    assert host.file(layout.log_dir("live")).exists  # its logs stay until a purge
    assert not host.socket(f"tcp://{GW}:{LIVE.front_port}").is_listening
    assert serves(PAPER.front_port)
    converge(str(base))
    assert all(host.service(u).is_running for u in live_units) and serves(LIVE.front_port)


def test_gate_off_and_on(base, host):
    gates = [layout.gate_unit(g.mode) for g in HOST.gateways]
    converge(variant(base, "no-gate", lambda h: h["front"].update(gate=False)))
    assert all(gone(host, u) for u in gates) and not host.file(layout.gate_config("paper")).exists
    assert host.file(layout.GATE_STATE).is_directory  # the audit stays
    assert serves(PAPER.front_port)
    converge(str(base))
    assert all(host.service(u).is_running for u in gates) and serves(PAPER.front_port)


def test_firewall_on_to_off_and_back(lab, base, host):
    """Off: the table inet ibgw is gone and its unit disabled, so the outsider reaches the front
    (which then refuses it) and live's simulator, which listens on every interface as IB Gateway
    does. On again: the rules are back and the outsider's connects time out again."""
    unit, ports = layout.FIREWALL_UNIT, (PAPER.front_port, LIVE.api_port)
    outsider_ok = [lab.connects("outsider", GW, port).returncode == 0 for port in ports]
    assert outsider_ok == [False, False], "the firewall should be on before the test"
    converge(variant(base, "no-firewall", lambda h: h["firewall"].update(enabled=False)))
    assert gone(host, unit) and not host.file(f"{layout.UNIT_DIR}/{unit}").exists
    assert not host.file(f"{layout.ETC}/firewall.nft").exists
    assert "inet ibgw" not in host.check_output("nft list tables")
    front = lab.connects("outsider", GW, PAPER.front_port)  # HAProxy's rejection may reset the connect
    assert front.returncode == 0 or "ConnectionResetError" in front.stderr, front.stderr
    api = lab.connects("outsider", GW, LIVE.api_port)
    assert api.returncode == 0, api.stderr
    assert serves(PAPER.front_port)
    converge(str(base))
    assert host.service(unit).is_enabled and host.service(unit).is_running
    assert "table inet ibgw" in host.check_output("nft list tables")
    for port in ports:
        dropped = lab.connects("outsider", GW, port)
        assert dropped.returncode != 0 and "timed out" in dropped.stderr, (port, dropped.stderr)
    assert serves(PAPER.front_port)


def test_a_restart_waits_while_an_app_is_connected(base, host):
    """A change to the paper gateway's unit (its simulator's seed) with an ib_async app connected."""

    def reseed(h: dict) -> None:
        h["gateways"][0]["simulator"]["seed"] = 99

    changed, unit = variant(base, "reseed", reseed), layout.gateway_unit("paper")
    since = host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout
    ib = IB()
    ib.connect(GW, PAPER.front_port, clientId=1, timeout=15)
    try:
        first = ibgw("provision", NAME, "-i", changed)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"pending: restart {unit}" in first.stdout and "smart-lean-0dte" in first.stdout
        again = ibgw("provision", NAME, "-i", changed)
        assert recap(again)["changed"] == 0 and f"pending: restart {unit}" in again.stdout
        assert host.file(layout.pending_file(unit)).mode == 0o600
        assert host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout == since
        ib.reqCurrentTime()  # still connected, still served
        assert ib.isConnected()
    finally:
        ib.disconnect()
    now = ibgw("provision", NAME, "-i", changed, "--restart", "now")
    assert now.returncode == 0 and "pending" not in now.stdout, now.stdout
    assert not host.file(layout.pending_file(unit)).exists
    assert host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout != since
    converge(str(base))


def test_a_pending_restart_happens_in_the_maintenance_window(base, host):
    """The window opens during the test (in about two minutes): the host's timer applies the restart."""
    unit = layout.gateway_unit("paper")
    opens = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=2)).strftime("%H:%M")

    def reseed_with_a_window(h: dict) -> None:
        h["gateways"][0]["simulator"]["seed"] = 98
        h["gateways"][0]["ibc"] = {"time_zone": "Etc/UTC"}
        h["gateways"][0]["maintenance_time"] = opens

    since = host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout
    ib = IB()
    ib.connect(GW, PAPER.front_port, clientId=1, timeout=15)
    try:
        run = ibgw("provision", NAME, "-i", variant(base, "window", reseed_with_a_window))
        assert run.returncode == 0 and f"pending: restart {unit}" in run.stdout, run.stdout + run.stderr
    finally:
        ib.disconnect()
    assert host.file(layout.pending_file(unit)).exists
    deadline = time.monotonic() + 200
    while host.file(layout.pending_file(unit)).exists:
        assert time.monotonic() < deadline, host.run("journalctl -n 20 -u ibgw-restart@paper.service").stdout
        time.sleep(2)
    assert host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout != since
    assert host.service(unit).is_running
    converge(str(base))


def test_an_haproxy_reload_drops_none_of_20_connected_apps(base, host):
    """A change to haproxy.cfg reloads it (Debian's unit: master-worker, USR2): old workers keep
    the established connections."""

    def many(limit: int):
        def edit(h: dict) -> None:
            h["front"]["per_source_limit"] = limit
            h["apps"] += [
                {"name": f"app-{i}", "client_id": 100 + i, "modes": ["paper"], "sources": [f"{OPERATOR}/32"]}
                for i in range(20)
            ]

        return edit

    converge(variant(base, "many", many(64)))
    since = host.run("systemctl show -p ActiveEnterTimestampMonotonic --value haproxy.service").stdout
    apps = []
    try:
        for i in range(20):
            apps.append(IB())
            apps[-1].connect(GW, PAPER.front_port, clientId=100 + i, timeout=15)
        reload = ibgw("provision", NAME, "-i", variant(base, "many-reload", many(65)))
        assert reload.returncode == 0 and "service haproxy.service (reload)" in reload.stdout, reload.stdout
        assert (
            host.run("systemctl show -p ActiveEnterTimestampMonotonic --value haproxy.service").stdout
            == since
        )
        for ib in apps:
            assert ib.isConnected() and ib.reqCurrentTime()
    finally:
        for ib in apps:
            ib.disconnect()
    converge(str(base))


def test_check_lists_removals_and_changes_nothing(base, host):
    check = ibgw(
        "provision",
        NAME,
        "-i",
        variant(base, "no-gate-check", lambda h: h["front"].update(gate=False)),
        "--check",
    )
    assert check.returncode == 0 and "stop and disable: no longer in the inventory" in check.stdout
    assert f"{layout.gate_config('paper')} (remove" in check.stdout
    assert host.service(layout.gate_unit("paper")).is_running


def test_decommission_then_purge(base, host):
    units = [layout.gateway_unit(g.mode) for g in HOST.gateways] + [
        layout.gate_unit("paper"),
        "haproxy.service",
    ]
    keep = ibgw("decommission", NAME, "-i", str(base))
    assert keep.returncode == 0, keep.stdout + keep.stderr
    assert all(gone(host, u) for u in units)
    for path in (
        layout.ETC,
        layout.OPT,
        f"{layout.UNIT_DIR}/{layout.gateway_unit('paper')}",
        layout.LOGROTATE,
    ):
        assert not host.file(path).exists, path
    assert host.user(layout.USER).exists and host.file(layout.LOG).is_directory
    assert host.file(layout.GATE_STATE).is_directory
    purge = ibgw("decommission", NAME, "-i", str(base), "--purge")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not host.user(layout.USER).exists
    for path in (layout.HOME, layout.LOG, layout.MANIFEST):
        assert not host.file(path).exists, path
    again = ibgw("decommission", NAME, "-i", str(base), "--purge")
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout
