"""From the operator machine: `ibgw audit HOST` over SSH, and `ibgw health` from an admin-only source.

This machine is the lab's operator (198.18.0.1). For the admin-only source, the apps go back to
inventories/lab.yml's sources (app-a and app-b only), and the operator is left to
`firewall.admin_cidrs` alone, next to the bastion: gw's live firewall and its front then let it in
for health's probe only. health itself probes the front from the bastion, where its SSH comes from.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from ib_async import IB

from ibgw_provision.tws.codec import encode_text
from ibgw_provision.tws.framing import Hello
from ibgw_provision.tws.messages import Out

from .conftest import GW, NAME, OPERATOR, fresh_host, ibgw, suite_inventory
from .test_gate import PAPER, App
from .test_health import _tws_client

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def inv_path(lab, tmp_path_factory):
    inv = suite_inventory(tmp_path_factory.mktemp("operator"))
    fresh_host(lab, inv)
    return str(inv)


def _audit(inv_path: str, *args: str):
    wide = {**os.environ, "COLUMNS": "250"}  # rich's tables, not squeezed into 80 columns
    proc = ibgw("audit", NAME, "-i", inv_path, "--since", "10m", *args, timeout=120, env=wide)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    return proc.stdout


def test_audit_of_the_host_shows_a_forwarded_and_a_refused_order(inv_path):
    with App(1) as trader:
        forwarded = trader.order(1).order.orderId
    with App(2) as reader:  # python-research is read-only
        refused = reader.order(1).order.orderId
    started = time.monotonic()
    rows = json.loads(_audit(inv_path, "--json"))
    print(f"audit over SSH: {time.monotonic() - started:.2f}s")  # noqa: T201
    orders = {(r["app"], r["order_id"]): r for r in rows["orders"]}
    assert orders[("smart-lean-0dte", forwarded)]["decision"] == "forwarded"
    assert orders[("python-research", refused)]["decision"] == "refused"
    assert "read-only" in orders[("python-research", refused)]["reason"]
    assert {r["mode"] for r in rows["orders"]} == {"paper"}
    assert {"smart-lean-0dte", "python-research"} <= {r["app"] for r in rows["connections"]}
    text = _audit(inv_path, "--mode", "paper", "--app", "python-research")
    line = next(line for line in text.splitlines() if f" {refused} " in line and "refused" in line)
    assert line.startswith("paper ") and "python-research" in line
    assert "smart-lean-0dte" not in text


def _variant(inv_path: str, tmp: Path, admin: bool) -> str:
    """The apps without the operator; with `admin`, the operator in firewall.admin_cidrs (next to
    the bastion). Provisioned."""
    doc = yaml.safe_load(Path(inv_path).read_text())
    host = doc["hosts"][NAME]
    for app in host["apps"]:
        app["sources"].remove(f"{OPERATOR}/32")
    if admin:
        host["firewall"]["admin_cidrs"].append(f"{OPERATOR}/32")
    assert f"{OPERATOR}/32" not in str(host["apps"])
    assert (f"{OPERATOR}/32" in host["firewall"]["admin_cidrs"]) == admin
    path = tmp / f"admin-{admin}.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    run = ibgw("provision", NAME, "-i", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    return str(path)


def _health(path: str) -> tuple[int, dict]:
    proc = ibgw("health", NAME, "-i", path, "--json", "--timeout", "10", timeout=120)
    return proc.returncode, json.loads(proc.stdout)["hosts"][0]


def _refusal(client_id: int) -> bytes:
    """What the front and gate answer START_API from the operator as `client_id`, until they close."""
    data = b""
    with _tws_client(OPERATOR, PAPER.front_port, client_id) as sock:
        deadline = time.monotonic() + 10
        while chunk := sock.recv(4096):
            data += chunk
            assert time.monotonic() < deadline, data
    return data


@pytest.fixture(scope="module")
def admin_only(inv_path, tmp_path_factory):
    """Provision a variant when it is not the one on the host already: each run restarts the gates
    (their config changes), and systemd's start limit counts restarts. Last in the module."""
    tmp, current = tmp_path_factory.mktemp("variants"), {}

    def use(admin: bool) -> str:
        if admin not in current:
            current.clear()
            current[admin] = _variant(inv_path, tmp, admin)
        return current[admin]

    return use


def test_health_from_an_admin_only_source_is_healthy(lab, admin_only):
    """health probes the front from where its SSH comes from: the bastion, an admin address and no
    app's source. The operator, neither an app nor an admin, is dropped by the firewall; as an
    admin, it gets in with the probe's client id only."""
    bastion = f"jump host 1 (root@{lab.addr('bastion')}:22)"
    for admin in (False, True):
        code, report = _health(admin_only(admin))
        others = [f for f in report["findings"] if f["check"] != "load"]  # the machine's load is shared
        assert others == [] and code == (1 if report["findings"] else 0), report["findings"]
        assert all(g["front"]["ok"] and g["front"]["accounts"] for g in report["gateways"])
        assert {g["front_from"] for g in report["gateways"]} == {bastion}
        if not admin:
            dropped = lab.connects("operator", GW, PAPER.front_port)
            assert dropped.returncode != 0 and "timed out" in dropped.stderr, dropped.stderr
    # The admin source gets in with the probe's client id only: an app's id is refused by the gate.
    assert b"refused by ibgw gate: client id 1" in _refusal(1)
    assert b"not registered" in _refusal(42)


def test_the_probe_id_from_the_admin_source_may_only_ask_the_time(admin_only):
    """health.probe_client_id + 1 from the admin source: the gate answers the time and refuses
    anything else, a read of the account included (so an order too). ib_async cannot log on as it:
    its start-up requests are refused."""
    admin_only(True)
    with socket.create_connection((GW, PAPER.front_port), timeout=10) as sock:
        sock.sendall(Hello(100, 178).encode())
        version = int(_frame(sock).split(b"\0")[0])
        sock.sendall(encode_text(version, Out.START_API, (2, 9999, "")))
        sock.sendall(encode_text(version, Out.REQ_POSITIONS, (1,)))
        deadline, seen = time.monotonic() + 10, b""
        while b"may only ask the time" not in seen:
            assert time.monotonic() < deadline, seen
            seen += _frame(sock)
    assert b"reqPositions is not allowed for app ibgw-health" in seen


def _frame(sock: socket.socket) -> bytes:
    """One length-prefixed frame."""
    size = int.from_bytes(_exactly(sock, 4), "big")
    return _exactly(sock, size)


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def test_an_app_id_from_the_admin_source_cannot_log_on(admin_only):
    admin_only(True)
    ib = IB()
    with pytest.raises((ConnectionError, TimeoutError, OSError)):
        ib.connect(GW, PAPER.front_port, clientId=1, timeout=5)
    ib.disconnect()
