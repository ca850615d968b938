"""gw in the lab, provisioned from the suite's inventory (inventories/lab.yml, simulator backend)."""

from __future__ import annotations

import re
import time

import pytest

from ibgw_provision import inventory
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import layout
from ibgw_provision.provision.render import render_host

from .conftest import GW, NAME, OPERATOR, fresh_host, ibgw, recap, suite_inventory, tws_hello

pytestmark = pytest.mark.lab
UNITS = ["haproxy.service", layout.FIREWALL_UNIT] + [layout.gateway_unit(m) for m in ("paper", "live")]


@pytest.fixture(scope="module")
def target(lab, tmp_path_factory):
    inv = suite_inventory(tmp_path_factory.mktemp("local"))
    return inv, fresh_host(lab, inv)


@pytest.fixture(scope="module")
def first_run(target):
    return target[1]


@pytest.fixture(scope="module")
def inv_path(target):
    return str(target[0])


@pytest.fixture(scope="module")
def inv(target):
    return inventory.load(target[0])


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


def test_gateways_listen_where_the_inventory_says_and_the_front_on_its_ports(host, inv):
    """Paper's simulator on loopback only; live's on every interface, as IB Gateway does (the firewall
    keeps it closed); the gates on loopback; the front on its bind address."""
    listeners, spec = _listeners(host), inv.hosts[NAME]
    assert [g.simulator.listen for g in spec.gateways] == ["loopback", "all"]
    for gw in spec.gateways:
        bound = {"0.0.0.0"} if gw.simulator.listen == "all" else {"127.0.0.1"}
        assert listeners.get(gw.api_port) == bound, gw.mode
        assert listeners.get(gw.gate_port) == {"127.0.0.1"}, gw.mode
        assert listeners.get(gw.front_port) == {spec.front.bind}, gw.mode


def test_configs_on_the_host_pass_their_validators(host):
    assert host.run("haproxy -c -f /etc/haproxy/haproxy.cfg").rc == 0
    logrotate = host.run("logrotate -d /etc/logrotate.d/ibgw")
    assert logrotate.rc == 0 and "error:" not in logrotate.stderr + logrotate.stdout
    assert host.run(f"nft -c -f {layout.ETC}/firewall.nft").rc == 0


def test_managed_files_have_their_owner_and_mode(host, inv):
    for f in render_host(inv, NAME, Secrets(masked=True)):
        remote = host.file(f.path)
        assert (remote.user, remote.group, remote.mode) == (f.owner, f.group, f.mode), f.path


def test_a_killed_gateway_is_restarted_by_systemd(host, inv):
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
    _wait_listening(host, inv.hosts[NAME].gateway("paper").api_port)


def _wait_listening(host, port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while port not in _listeners(host):
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.25)


def test_second_run_changes_nothing_in_constant_round_trips(inv_path):
    second = ibgw("provision", NAME, "-i", inv_path)
    assert second.returncode == 0, second.stdout + second.stderr
    counts = recap(second)
    assert counts["changed"] == 0 and counts["failed"] == 0
    assert counts["round_trips"] == 1  # the facts; nothing to apply


def test_drift_is_reported_by_check_and_repaired_by_a_run(host, inv_path, inv):
    path = "/etc/haproxy/haproxy.cfg"
    host.run(f"echo '# a hand edit' >> {path}")
    check = ibgw("provision", NAME, "-i", inv_path, "--check", "--diff")
    assert check.returncode == 0, check.stderr
    assert f"would change: file {path}" in check.stdout
    assert "-# a hand edit" in check.stdout
    assert "# a hand edit" in host.file(path).content_string, "--check must not change the host"
    run = ibgw("provision", NAME, "-i", inv_path)
    assert run.returncode == 0 and f"changed: file {path}" in run.stdout
    assert "changed: service haproxy.service (reload)" in run.stdout
    rendered = next(f for f in render_host(inv, NAME, Secrets(masked=True)) if f.path == path)
    assert host.file(path).content_string == rendered.content


def test_a_failed_step_exits_1_and_a_rerun_converges(host, inv_path):
    blocked = layout.settings_dir("live")
    host.run(f"rm -rf {blocked} && touch {blocked}")  # a file where a directory belongs
    failed = ibgw("provision", NAME, "-i", inv_path)
    assert failed.returncode == 1
    assert re.search(rf"FAILED: dir {blocked}: .*File exists", failed.stdout), failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr
    host.run(f"rm -f {blocked}")
    rerun = ibgw("provision", NAME, "-i", inv_path)
    assert rerun.returncode == 0, rerun.stdout
    assert host.file(blocked).is_directory and host.file(blocked).mode == 0o700


def test_front_admits_allowlisted_sources_and_refuses_others(lab, inv, first_run):
    port = inv.hosts[NAME].gateway("paper").front_port
    assert tws_hello(lab, "operator", OPERATOR, port)[4:].split(b"\0")[0].isdigit()
    # From gw's own loopback the firewall lets it through (lo): HAProxy's allowlist refuses it.
    assert tws_hello(lab, NAME, "127.0.0.2", port) == b""
    # From outside every allowlist, nftables drops it before HAProxy: the connect times out.
    outsider = lab.connects("outsider", GW, port)
    assert outsider.returncode != 0 and "timed out" in outsider.stderr, outsider.stderr


def test_three_ib_async_clients_use_paper_through_the_front_at_once(inv, first_run):
    from ib_async import IB

    gw = inv.hosts[NAME].gateway("paper")
    clients = []
    try:
        for client_id in (1, 2, 3):
            ib = IB()
            ib.connect(GW, gw.front_port, clientId=client_id, timeout=15)
            clients.append(ib)
        for ib in clients:
            assert ib.isConnected()
            assert ib.managedAccounts() == gw.simulator.accounts
            assert ib.reqCurrentTime().year >= 2024
    finally:
        for ib in clients:
            ib.disconnect()
