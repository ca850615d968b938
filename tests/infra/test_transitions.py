"""The host follows the inventory both ways: provision A, then B, check the host, B again (0 changed),
then A again (it converges back). The firewall's on -> off is tested at the plan and agent level only
(tests/unit/test_absence.py): this host shares the build machine's network namespace."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
import yaml
from ib_async import IB

from ibgw_provision import inventory
from ibgw_provision.provision import layout

from .conftest import LOCAL, fresh_host, ibgw, recap

HOST = inventory.load(LOCAL).hosts["local"]
PAPER, LIVE = HOST.gateway("paper"), HOST.gateway("live")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return fresh_host(LOCAL, tmp_path_factory.mktemp("transitions"))[0]


@pytest.fixture
def host(base, ssh_host):
    return ssh_host


def variant(base: Path, name: str, edit) -> str:
    doc = yaml.safe_load(base.read_text())
    edit(doc["hosts"]["local"])
    path = base.parent / f"{name}.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def converge(inv: str) -> None:
    """Provision, then provision again: the second run changes nothing."""
    first = ibgw("provision", "local", "-i", inv)
    assert first.returncode == 0, first.stdout + first.stderr
    again = ibgw("provision", "local", "-i", inv)
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout


def serves(port: int, client_id: int = 1) -> bool:
    """A real ib_async app gets its accounts through the front."""
    ib = IB()
    try:
        ib.connect("127.0.0.1", port, clientId=client_id, timeout=15)
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
    assert not host.socket(f"tcp://127.0.0.1:{LIVE.front_port}").is_listening
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


def test_a_restart_waits_while_an_app_is_connected(base, host):
    """A change to the paper gateway's unit (its simulator's seed) with an ib_async app connected."""

    def reseed(h: dict) -> None:
        h["gateways"][0]["simulator"]["seed"] = 99

    changed, unit = variant(base, "reseed", reseed), layout.gateway_unit("paper")
    since = host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout
    ib = IB()
    ib.connect("127.0.0.1", PAPER.front_port, clientId=1, timeout=15)
    try:
        first = ibgw("provision", "local", "-i", changed)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"pending: restart {unit}" in first.stdout and "smart-lean-0dte" in first.stdout
        again = ibgw("provision", "local", "-i", changed)
        assert recap(again)["changed"] == 0 and f"pending: restart {unit}" in again.stdout
        assert host.file(layout.pending_file(unit)).mode == 0o600
        assert host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout == since
        ib.reqCurrentTime()  # still connected, still served
        assert ib.isConnected()
    finally:
        ib.disconnect()
    now = ibgw("provision", "local", "-i", changed, "--restart", "now")
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
    ib.connect("127.0.0.1", PAPER.front_port, clientId=1, timeout=15)
    try:
        run = ibgw("provision", "local", "-i", variant(base, "window", reseed_with_a_window))
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
                {"name": f"app-{i}", "client_id": 100 + i, "modes": ["paper"], "sources": ["127.0.0.1/32"]}
                for i in range(20)
            ]

        return edit

    converge(variant(base, "many", many(64)))
    since = host.run("systemctl show -p ActiveEnterTimestampMonotonic --value haproxy.service").stdout
    apps = []
    try:
        for i in range(20):
            apps.append(IB())
            apps[-1].connect("127.0.0.1", PAPER.front_port, clientId=100 + i, timeout=15)
        reload = ibgw("provision", "local", "-i", variant(base, "many-reload", many(65)))
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
        "local",
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
    keep = ibgw("decommission", "local", "-i", str(base))
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
    purge = ibgw("decommission", "local", "-i", str(base), "--purge")
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert not host.user(layout.USER).exists
    for path in (layout.HOME, layout.LOG, layout.MANIFEST):
        assert not host.file(path).exists, path
    again = ibgw("decommission", "local", "-i", str(base), "--purge")
    assert again.returncode == 0 and recap(again)["changed"] == 0, again.stdout
