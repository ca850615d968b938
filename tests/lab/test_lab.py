"""The lab itself: gw behaves like a fresh Debian cloud host behind a bastion, on its own network.

Needs root (skipped otherwise). Every address used is the lab's (198.18.0.0/15) or loopback.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import time

import pytest

from ibgw_provision import inventory
from tests.kit.lab import ROOT, read_env, run_lab

pytestmark = pytest.mark.lab
RESERVED = ipaddress.ip_network("198.18.0.0/15")


def test_gw_is_reached_through_the_bastion_as_admin_with_passwordless_sudo(lab):
    proc = lab.ssh('echo "$USER ${SSH_CONNECTION%% *}"; sudo -n id -u')
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["admin", lab.addr("bastion"), "0"]


def test_root_login_is_refused_like_a_debian_cloud_image(lab):
    proc = lab.ssh("id", user="root")
    assert proc.returncode == 142
    assert 'Please login as the user "admin" rather than the user "root".' in proc.stdout


def test_opsuser_needs_its_password_for_sudo(lab):
    refused = lab.ssh("sudo -n true", user="opsuser")
    assert refused.returncode == 1 and "password is required" in refused.stderr
    password = open(lab.env["LAB_OPSUSER_PASSWORD_FILE"]).read().strip()
    wrong = lab.ssh("sudo -S -p '' id -u", user="opsuser", input="not-the-password\n" * 3)
    assert wrong.returncode == 1
    right = lab.ssh("sudo -S -p '' id -u", user="opsuser", input=password + "\n")
    assert right.returncode == 0 and right.stdout.strip() == "0", right.stderr


def test_the_password_file_is_private(lab):
    path = ROOT / "build" / "lab" / "opsuser-password"
    assert path.stat().st_mode & 0o777 == 0o600


def test_host_keys_are_pinned(lab):
    text = lab.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in text and "StrictHostKeyChecking no" not in text
    known = (ROOT / "build" / "lab" / "known_hosts").read_text().split("\n")
    hosts = sorted(line.split()[0] for line in known if line)
    assert hosts == sorted([lab.addr("bastion"), lab.addr("gw")])


def test_the_dpkg_lock_is_held_after_boot_then_released(lab):
    lab.reset()
    held = lab.ssh("sudo -n dpkg --configure -a")
    assert held.returncode == 2 and "dpkg frontend lock" in held.stderr, held.stderr
    start = time.monotonic()
    while time.monotonic() - start < 40:
        if lab.ssh("sudo -n dpkg --configure -a").returncode == 0:
            break
        time.sleep(1)
    else:
        pytest.fail("the dpkg lock was still held 40 s after boot")


def test_apt_in_gw_reaches_the_mirror_through_the_lab_proxy_only(lab):
    routes = lab.exec("gw", ["ip", "-4", "route"]).stdout.strip().splitlines()
    assert len(routes) == 1 and routes[0].startswith("198.18.0.0/22 dev eth0"), routes  # no default route
    log = ROOT / "build" / "lab" / "proxy" / "tinyproxy.log"
    before = log.stat().st_size
    proc = lab.ssh("sudo -n apt-get update", timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"http://{lab.addr('operator')}:3128" in lab.ssh("apt-config dump Acquire::http::Proxy").stdout
    with open(log) as f:
        f.seek(before)
        new = f.read()
    assert re.search(rf"Connect \(file descriptor \d+\): {re.escape(lab.addr('gw'))}\b", new), new[-2000:]


def test_the_proxy_serves_only_the_mirror(lab):
    code = (
        "import urllib.request as u\n"
        f"o = u.build_opener(u.ProxyHandler({{'http': 'http://{lab.addr('operator')}:3128'}}))\n"
        "try:\n    o.open('http://lab-outside.invalid/', timeout=5)\n"
        "except u.HTTPError as e:\n    print(e.code)\n"
    )
    proc = lab.exec("outsider", ["python3", "-c", code])
    assert proc.stdout.strip() == "403", proc.stdout + proc.stderr


@pytest.fixture
def listeners(lab):
    """HTTP listeners on gw's lab address, ports 4002 and 4003 (transient units); removed after."""
    gw = lab.addr("gw")
    for port in (4002, 4003):
        unit = f"labtest-{port}"
        proc = lab.exec(
            "gw",
            ["systemd-run", "-q", f"--unit={unit}", "python3", "-m", "http.server", "--bind", gw, str(port)],
        )
        assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 15
    while lab.connects("app-a", gw, 4003).returncode or lab.connects("app-a", gw, 4002).returncode:
        assert time.monotonic() < deadline, "the listeners in gw did not start"
        time.sleep(0.3)
    yield gw
    lab.exec("gw", "nft delete table inet labtest; systemctl stop labtest-4002 labtest-4003")


def test_an_nftables_rule_in_gw_applies_to_gw_alone(lab, listeners):
    rules = (
        "nft add table inet labtest && "
        "nft add chain inet labtest input '{ type filter hook input priority 0; }' && "
        "nft add rule inet labtest input tcp dport 4002 drop"
    )
    proc = lab.exec("gw", rules)
    assert proc.returncode == 0, proc.stderr
    dropped = lab.connects("app-a", listeners, 4002, timeout=2)
    assert dropped.returncode != 0 and "timed out" in dropped.stderr, dropped.stderr
    assert lab.connects("app-a", listeners, 4003).returncode == 0
    # The rule lives in gw's namespace only: this machine's ruleset has no such table.
    ours = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10)
    assert "labtest" not in ours.stdout


def test_the_operator_and_the_bastion_route_to_gw(lab):
    for node in ("operator", "bastion"):
        proc = lab.connects(node, lab.addr("gw"), 22)
        assert proc.returncode == 0, (node, proc.stderr)


def test_app_machines_are_inside_the_allowlist_and_the_outsider_is_not(lab):
    host = inventory.load(ROOT / "inventories" / "lab.yml").hosts["gw"]
    allowlists = [ipaddress.ip_network(c) for app in host.apps for c in app.sources]
    allowlists.append(ipaddress.ip_network(lab.env["LAB_APP_CIDR"]))
    admin = [ipaddress.ip_network(c) for c in host.firewall.admin_cidrs]
    addr = {node: ipaddress.ip_address(lab.addr(node)) for node in ("bastion", "app-a", "app-b", "outsider")}
    assert all(any(addr[n] in net for net in allowlists) for n in ("app-a", "app-b"))
    assert not any(addr["outsider"] in net for net in allowlists + admin)
    assert admin == [ipaddress.ip_network(f"{addr['bastion']}/32")]
    assert host.address == lab.addr("gw") and host.front.bind == lab.addr("gw")


def test_every_lab_address_is_reserved_for_network_tests(lab):
    for node in ("bastion", "gw", "app-a", "app-b", "outsider"):
        proc = lab.exec(node, ["ip", "-o", "addr", "show"])
        found = re.findall(r"\binet6? (\S+)", proc.stdout)
        assert found, proc.stderr
        for iface in found:
            ip = ipaddress.ip_interface(iface).ip
            assert ip.is_loopback or ip in RESERVED, (node, iface)
        assert f"inet {lab.addr(node)}/" in proc.stdout


def test_lab_ssh_and_exec_reach_every_node(lab):
    for node in ("bastion", "gw", "app-a", "app-b", "outsider"):
        for how in ("ssh", "exec"):
            proc = run_lab(how, node, "ip", "-4", "-o", "addr", "show", "dev", "eth0")
            assert proc.returncode == 0, (how, node, proc.stderr)
            assert f"inet {lab.addr(node)}/22" in proc.stdout, (how, node, proc.stdout)
    assert run_lab("ssh", "gw", "id", "-un").stdout.strip() == "admin"
    operator = run_lab("exec", "operator", "ip", "-4", "-o", "addr", "show", "dev", "ibgwlab-op")
    assert f"inet {lab.addr('operator')}/22" in operator.stdout, operator.stderr


def test_up_is_idempotent(lab):
    proc = run_lab("up")
    assert proc.returncode == 0 and "already up" in proc.stderr, proc.stderr
    assert run_lab("status").returncode == 0


def test_the_debian_12_gw(lab):
    release = lab.env["LAB_RELEASE"]
    proc = run_lab("--release", "bookworm", "reset", timeout=900)  # builds its rootfs once
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        assert read_env()["LAB_RELEASE"] == "bookworm"
        version = lab.ssh("cat /etc/debian_version")
        assert version.returncode == 0 and version.stdout.startswith("12."), version.stdout + version.stderr
        assert lab.ssh("sudo -n true").returncode == 0
    finally:
        back = run_lab("--release", release, "reset", timeout=900)
        assert back.returncode == 0, back.stdout + back.stderr
    assert lab.ssh("cat /etc/debian_version").stdout.startswith("13." if release == "trixie" else "12.")


def lab_leftovers() -> list[str]:
    """Every namespace, link and process of the lab that exists on this machine."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    procs = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, timeout=10).stdout
    lab_dir = str(ROOT / "build" / "lab")
    return (
        [line for line in netns.splitlines() if line.startswith("ibgwlab-")]
        + re.findall(r"^\d+: (ibgwlab-\S+?)[@:]", links, flags=re.M)
        + [line for line in procs.splitlines() if lab_dir in line or "ibgwlab-gw" in line]
    )


def test_down_leaves_nothing_behind(lab):
    """Last in this module: down, look, then up again for whoever comes next."""
    assert lab_leftovers()
    proc = run_lab("down")
    assert proc.returncode == 0, proc.stderr
    assert lab_leftovers() == []
    assert run_lab("status").returncode == 3
    up = run_lab("up", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
