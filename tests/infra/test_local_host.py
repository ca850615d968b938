"""The local disposable host, provisioned from inventories/local.yml (simulator backend)."""

from __future__ import annotations

import re
import socket
import time

import pytest

from ibgw_provision import inventory
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import layout
from ibgw_provision.provision.render import render_host

from .conftest import LOCAL, fresh_host, ibgw, recap

INV = inventory.load(LOCAL)
HOST = INV.hosts["local"]
UNITS = ["haproxy.service"] + [layout.gateway_unit(g.mode) for g in HOST.gateways]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return fresh_host(LOCAL, tmp_path_factory.mktemp("local"))


@pytest.fixture(scope="module")
def first_run(target):
    return target[1]


@pytest.fixture(scope="module")
def inv_path(target):
    return str(target[0])


@pytest.fixture
def host(first_run, ssh_host):
    return ssh_host


def test_first_run_converges_the_fresh_host(first_run):
    counts = recap(first_run)
    assert counts["changed"] > 10 and counts["failed"] == 0


def test_ibkr_user_is_unprivileged(host):
    user = host.user(layout.USER)
    assert user.exists and user.uid < 1000
    assert user.shell == "/usr/sbin/nologin"
    assert not {"sudo", "adm", "wheel", "root"} & set(user.groups)
    assert "not allowed" in host.run(f"sudo -l -U {layout.USER}").stdout


@pytest.mark.parametrize("unit", UNITS)
def test_every_unit_is_enabled_and_active(host, unit):
    service = host.service(unit)
    assert service.is_enabled and service.is_running


def _listeners(host) -> dict[int, set[str]]:
    out = host.check_output("ss -ltnH")
    found: dict[int, set[str]] = {}
    for local in (line.split()[3] for line in out.splitlines()):
        address, port = local.rsplit(":", 1)
        found.setdefault(int(port), set()).add(address.strip("[]").split("%")[0])
    return found


def test_gateways_listen_on_loopback_only_and_the_front_on_its_ports(host):
    listeners = _listeners(host)
    for gw in HOST.gateways:
        assert listeners.get(gw.api_port) == {"127.0.0.1"}, gw.mode
        assert listeners.get(gw.front_port) == {HOST.front.bind}, gw.mode


def test_configs_on_the_host_pass_their_validators(host):
    assert host.run("haproxy -c -f /etc/haproxy/haproxy.cfg").rc == 0
    logrotate = host.run("logrotate -d /etc/logrotate.d/ibgw")
    assert logrotate.rc == 0 and "error:" not in logrotate.stderr + logrotate.stdout


def test_managed_files_have_their_owner_and_mode(host):
    for f in render_host(INV, "local", Secrets(masked=True)):
        remote = host.file(f.path)
        assert (remote.user, remote.group, remote.mode) == (f.owner, f.group, f.mode), f.path


def test_a_killed_gateway_is_restarted_by_systemd(host):
    unit = layout.gateway_unit("paper")
    before = int(host.check_output(f"systemctl show -p MainPID --value {unit}"))
    assert before > 0
    host.run(f"kill -9 {before}")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid = int(host.check_output(f"systemctl show -p MainPID --value {unit}"))
        if pid not in (0, before) and host.service(unit).is_running:
            break
        time.sleep(0.25)
    else:
        pytest.fail(f"{unit} was not restarted within 20 s")
    assert int(host.check_output(f"systemctl show -p NRestarts --value {unit}")) >= 1
    _wait_listening(host, HOST.gateway("paper").api_port)


def _wait_listening(host, port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while port not in _listeners(host):
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.25)


def test_second_run_changes_nothing_in_constant_round_trips(inv_path):
    second = ibgw("provision", "local", "-i", inv_path)
    assert second.returncode == 0, second.stdout + second.stderr
    counts = recap(second)
    assert counts["changed"] == 0 and counts["failed"] == 0
    assert counts["round_trips"] == 1  # the facts; nothing to apply


def test_drift_is_reported_by_check_and_repaired_by_a_run(host, inv_path):
    path = "/etc/haproxy/haproxy.cfg"
    host.run(f"echo '# a hand edit' >> {path}")
    check = ibgw("provision", "local", "-i", inv_path, "--check", "--diff")
    assert check.returncode == 0, check.stderr
    assert f"would change: file {path}" in check.stdout
    assert "-# a hand edit" in check.stdout
    assert "# a hand edit" in host.file(path).content_string, "--check must not change the host"
    run = ibgw("provision", "local", "-i", inv_path)
    assert run.returncode == 0 and f"changed: file {path}" in run.stdout
    assert "changed: service haproxy.service (reload)" in run.stdout
    rendered = next(f for f in render_host(INV, "local", Secrets(masked=True)) if f.path == path)
    assert host.file(path).content_string == rendered.content


def test_a_failed_step_exits_1_and_a_rerun_converges(host, inv_path):
    blocked = layout.settings_dir("live")
    host.run(f"rm -rf {blocked} && touch {blocked}")  # a file where a directory belongs
    failed = ibgw("provision", "local", "-i", inv_path)
    assert failed.returncode == 1
    assert re.search(rf"FAILED: dir {blocked}: .*File exists", failed.stdout), failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
    host.run(f"rm -f {blocked}")
    rerun = ibgw("provision", "local", "-i", inv_path)
    assert rerun.returncode == 0, rerun.stdout
    assert host.file(blocked).is_directory and host.file(blocked).mode == 0o700


def _tws_handshake(source: str, port: int) -> bytes:
    """Open a TWS API connection from `source`; return the server's first reply, or b'' if refused."""
    version = b"v100..178"
    try:  # a refusal resets the connection: at the send or at the receive, whichever comes first
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
            sock.sendall(b"API\0" + len(version).to_bytes(4, "big") + version)
            return sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def test_front_admits_allowlisted_sources_and_refuses_others(first_run):
    port = HOST.gateway("paper").front_port
    assert _tws_handshake("127.0.0.1", port)[4:].split(b"\0")[0].isdigit()
    assert _tws_handshake("127.0.0.2", port) == b""


def test_three_ib_async_clients_use_paper_through_the_front_at_once(first_run):
    from ib_async import IB

    gw = HOST.gateway("paper")
    clients = []
    try:
        for client_id in (1, 2, 3):
            ib = IB()
            ib.connect("127.0.0.1", gw.front_port, clientId=client_id, timeout=15)
            clients.append(ib)
        for ib in clients:
            assert ib.isConnected()
            assert ib.managedAccounts() == gw.simulator.accounts
            assert ib.reqCurrentTime().year >= 2024
    finally:
        for ib in clients:
            ib.disconnect()
