"""The provisioned gw on the lab's network, seen from every node: what nftables drops, what the
front admits, a paper trade from app-a, SSH from the bastion only, and `ibgw health` through it.

Needs root and the lab (skipped otherwise). Every address is the lab's (198.18.0.0/15). A drop
is told from a refusal by its error: a connect that nftables drops times out; one that reaches
a closed port is refused at once, and one that HAProxy rejects connects and is closed.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ibgw_provision import inventory
from ibgw_provision.inventory.model import Host
from ibgw_provision.provision import apply, remote
from tests.lab.test_provision_lab import LAB_INVENTORY, NO_SSH_CONFIG, wait_for_dpkg

pytestmark = pytest.mark.lab
IBGW = Path(sys.executable).parent / "ibgw"
SOURCES = ("operator", "bastion", "app-a", "app-b", "outsider")  # every lab node but gw itself
CONNECT_TIMEOUT = 3.0  # seconds; a drop is a connect still unanswered after this
HOLD = 1.5  # seconds a connected socket is watched: closed at once means HAProxy rejected it

# Run on a node (its own python3): connect to each port at once; print each outcome as JSON.
#   dropped: the connect timed out; refused: ECONNREFUSED; closed: connected, then closed or reset
#   within HOLD; open: connected and held (the front waits for the client's API handshake).
PROBE = """
import json, socket, sys, threading
addr, ports, timeout, hold = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
out = {}
def one(port):
    try:
        s = socket.create_connection((addr, port), timeout=timeout)
    except socket.timeout:
        out[port] = "dropped"; return
    except ConnectionRefusedError:
        out[port] = "refused"; return
    except ConnectionResetError:  # HAProxy rejected it as it accepted it
        out[port] = "closed"; return
    except OSError as exc:
        out[port] = "error: %s" % exc; return
    s.settimeout(hold)
    try:
        out[port] = "closed" if s.recv(1) == b"" else "open"
    except socket.timeout:
        out[port] = "open"
    except OSError:
        out[port] = "closed"
    finally:
        s.close()
threads = [threading.Thread(target=one, args=(p,)) for p in ports]
for t in threads: t.start()
for t in threads: t.join(timeout + hold + 5)
print(json.dumps(out))
"""

# Run on app-a with this checkout's venv: log on through the front as an app, place a paper order.
TRADE = """
import json, sys
from ib_async import IB, MarketOrder, Stock
ib = IB()
ib.connect(sys.argv[1], int(sys.argv[2]), clientId=int(sys.argv[3]), timeout=15)
try:
    [spy] = ib.qualifyContracts(Stock("SPY", "SMART", "USD"))
    trade = ib.placeOrder(spy, MarketOrder("BUY", 1))
    for _ in range(100):  # bounded: at most about 10 s
        if trade.orderStatus.status == "Filled":
            break
        ib.sleep(0.1)
    print(json.dumps({"accounts": ib.managedAccounts(), "order_id": trade.order.orderId,
                      "status": trade.orderStatus.status, "filled": trade.orderStatus.filled,
                      "log": [[e.status, e.errorCode, e.message] for e in trade.log]}))
finally:
    ib.disconnect()
"""


def outcomes(lab, node: str, ports: list[int]) -> dict[int, str]:
    """How each of gw's ports answers a TCP connect from node."""
    argv = ["python3", "-c", PROBE, lab.addr("gw"), json.dumps(ports), str(CONNECT_TIMEOUT), str(HOLD)]
    proc = lab.exec(node, argv, timeout=CONNECT_TIMEOUT + HOLD + 30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {int(port): what for port, what in json.loads(proc.stdout).items()}


def admitted(host: Host, address: str, mode: str) -> bool:
    """Whether the inventory lets address in to mode's front: an app of that mode lists it, or it is
    an admin address and the gate (which admits admins with health's probe client id only) is on."""
    ip = ipaddress.ip_address(address)
    cidrs = [c for app in host.apps if mode in app.modes for c in app.sources]
    cidrs += host.firewall.admin_cidrs if host.front.gate else []
    return any(ip in ipaddress.ip_network(c) for c in cidrs)


@pytest.fixture(scope="module")
def gw(lab):
    """gw provisioned from inventories/lab.yml, as admin through the bastion; fresh again afterwards."""
    wait_for_dpkg(lab)
    inv = inventory.load(LAB_INVENTORY)
    opts = apply.Options(ssh=remote.SshOptions(ssh_config=Path(NO_SSH_CONFIG)))
    report = apply.provision_host(inv, "gw", opts)
    assert report.failed is None, report.failed
    yield inv.hosts["gw"]
    lab.reset()  # a fresh gw again for the next module


def test_the_outsiders_connects_to_the_front_time_out(lab, gw):
    fronts = [g.front_port for g in gw.gateways]
    assert sorted(fronts) == [4003, 4004]
    assert not any(admitted(gw, lab.addr("outsider"), g.mode) for g in gw.gateways)
    assert outcomes(lab, "outsider", fronts) == dict.fromkeys(fronts, "dropped")  # not refused by HAProxy


def test_from_app_a_the_api_ports_the_gate_ports_and_ssh_time_out(lab, gw):
    ports = [gw.ssh.port] + [p for g in gw.gateways for p in (g.api_port, g.gate_port, g.gate_metrics_port)]
    assert {4001, 4002, 22} <= set(ports) and len(ports) == 7
    assert outcomes(lab, "app-a", ports) == dict.fromkeys(ports, "dropped")
    # The control: the simulators listen on every interface, so it is nftables that keeps them closed.
    listening = lab.exec("gw", ["ss", "-Hltn"]).stdout
    assert all(f"*:{g.api_port} " in listening or f"0.0.0.0:{g.api_port} " in listening for g in gw.gateways)


def test_the_fronts_allowlist_and_the_firewall_agree_for_every_source(lab, gw):
    fronts = {g.front_port: g.mode for g in gw.gateways}
    seen, expected = {}, {}
    for node in SOURCES:
        seen[node] = outcomes(lab, node, list(fronts))
        expected[node] = {
            port: "open" if admitted(gw, lab.addr(node), mode) else "dropped" for port, mode in fronts.items()
        }
    assert seen == expected
    both = {what for by_port in expected.values() for what in by_port.values()}
    assert both == {"open", "dropped"}  # the matrix has both sides, so it can fail either way
    assert expected["app-b"] == {4004: "open", 4003: "dropped"}  # app-b is a paper-only source


def test_ib_async_from_app_a_logs_on_through_the_front_and_trades_paper(lab, gw):
    paper = next(g for g in gw.gateways if g.mode == "paper")
    app = next(a for a in gw.apps if a.client_id == 1)
    assert "paper" in app.modes and admitted(gw, lab.addr("app-a"), "paper")
    argv = [sys.executable, "-c", TRADE, gw.front.bind, str(paper.front_port), str(app.client_id)]
    proc = lab.exec("app-a", argv, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["accounts"] == list(paper.simulator.accounts), result
    assert result["order_id"] > 0 and result["status"] in ("Filled", "Submitted"), result
    assert not [entry for entry in result["log"] if entry[1]], result  # no error code on the order
    argv = [
        str(IBGW),
        "audit",
        "gw",
        "-i",
        str(LAB_INVENTORY),
        "--mode",
        "paper",
        "--app",
        app.name,
        "--json",
    ]
    audit = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    log = json.loads(audit.stdout)  # the gate saw the order as the app's, from app-a, and let it through
    orders = [(o["order_id"], o["decision"], o["connection_id"]) for o in log["orders"]]
    assert (result["order_id"], "forwarded") in [(order, decision) for order, decision, _ in orders], log
    sources = {c["id"]: c["source"].rsplit(":", 1)[0] for c in log["connections"]}
    assert {sources[conn] for order, _, conn in orders if order == result["order_id"]} == {lab.addr("app-a")}


def test_ssh_from_the_bastion_works_and_from_app_a_times_out(lab, gw):
    via = lab.ssh('echo "${SSH_CONNECTION%% *}"')
    assert via.returncode == 0, via.stderr
    assert via.stdout.strip() == lab.addr("bastion")
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={int(CONNECT_TIMEOUT)}",
            "-o", f"UserKnownHostsFile={lab.env['LAB_KNOWN_HOSTS']}", "-o", "StrictHostKeyChecking=yes",
            "-i", lab.env["LAB_KEY"], f"admin@{lab.addr('gw')}", "true"]  # fmt: skip
    direct = lab.exec("app-a", argv, timeout=CONNECT_TIMEOUT + 20)
    assert direct.returncode == 255
    assert "Connection timed out" in direct.stderr, direct.stderr


def test_ibgw_health_through_the_bastion_is_healthy(lab, gw):
    argv = [str(IBGW), "health", "gw", "-i", str(LAB_INVENTORY), "--json", "--ssh-config", NO_SSH_CONFIG]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (report,) = json.loads(proc.stdout)["hosts"]
    assert (report["status"], report["findings"]) == ("healthy", [])
    jump = f"jump host 1 (root@{lab.addr('bastion')}:22)"  # the front probe's source: the bastion
    assert [(g["mode"], g["front"]["ok"], g["front_from"]) for g in report["gateways"]] == [
        (g.mode, True, jump) for g in gw.gateways
    ]
    assert report["firewall"] == {"enabled": True, "loaded": True}
