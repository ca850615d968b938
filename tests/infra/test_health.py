"""`ibgw health`, `ibgw monitor` and `ibgw apps` against gw, provisioned in the lab."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import jsonschema
import pytest

from ibgw_provision import inventory
from ibgw_provision.observe import health
from ibgw_provision.provision import layout, state
from ibgw_provision.tws.codec import encode_text
from ibgw_provision.tws.framing import Hello
from ibgw_provision.tws.messages import Out

from .conftest import GW, HOST, NAME, OPERATOR, fresh_host, ibgw, on_node, suite_inventory, tws_hello

pytestmark = pytest.mark.lab
SCHEMA = json.loads((Path(health.__file__).parent / "health.schema.json").read_text())
PAPER = layout.gateway_unit("paper")


@pytest.fixture(scope="module")
def inv_path(lab, tmp_path_factory):
    inv = suite_inventory(tmp_path_factory.mktemp("health"))
    fresh_host(lab, inv)
    return str(inv)


@pytest.fixture
def host(inv_path, ssh_host):
    return ssh_host


def _health(inv_path: str, *flags: str):
    proc = ibgw("health", NAME, "-i", inv_path, "--timeout", "10", *flags, timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def _report(inv_path: str) -> tuple[int, dict]:
    proc = _health(inv_path, "--json")
    document = json.loads(proc.stdout)
    jsonschema.validate(document, SCHEMA)
    return proc.returncode, document["hosts"][0]


def test_a_provisioned_host_is_healthy_and_the_json_fits_its_schema(inv_path):
    code, report = _report(inv_path)
    # The test host shares the build machine's kernel, so its load average is the machine's:
    # a busy machine may add a load finding (degraded), and nothing else may appear.
    busy = [f for f in report["findings"] if f["check"] == "load"]
    others = [f for f in report["findings"] if f["check"] != "load"]
    assert others == []
    assert (code, report["status"]) == ((1, "degraded") if busy else (0, "healthy"))
    for gw in report["gateways"]:
        for where in ("direct", "front"):
            assert gw[where]["ok"] and gw[where]["accounts"], (gw["mode"], where)
    assert [u["name"] for u in report["units"]] == state.units(inventory.load(inv_path).hosts[NAME])
    brief = _health(inv_path, "--brief")
    expected = {0: "IBGW OK - gw: 2/2 gateways answer", 1: "IBGW WARNING - gw: load "}  # as above
    assert brief.stdout.startswith(expected[brief.returncode])


def test_a_stopped_gateway_is_down_and_named(inv_path, host):
    host.run(f"systemctl stop {PAPER}")
    try:
        code, report = _report(inv_path)
        assert code == 2 and report["status"] == "down"
        assert any(f["check"] == "unit" and f["subject"] == PAPER for f in report["findings"])
        assert PAPER in _health(inv_path, "--brief").stdout
    finally:
        host.run(f"systemctl start {PAPER}")


def test_live_accounts_behind_a_paper_declaration_are_a_mode_mismatch(inv_path, host):
    dropin = f"/etc/systemd/system/{PAPER}.d"
    gw = f"127.0.0.1:{HOST.gateway('paper').api_port}"
    host.run(
        f"mkdir -p {dropin} && printf '[Service]\\nExecStart=\\nExecStart={layout.VENV}/bin/ibgw sim "
        f"--listen {gw} --mode live --accounts U5550001\\n' > {dropin}/swap.conf "
        f"&& systemctl daemon-reload && systemctl restart {PAPER}"
    )
    try:
        code, report = _report(inv_path)
        assert code == 2
        mismatch = [f for f in report["findings"] if f["check"] == "mode"]
        assert mismatch and "MODE MISMATCH" in mismatch[0]["message"] and "U5550001" in mismatch[0]["message"]
    finally:
        host.run(f"rm -rf {dropin} && systemctl daemon-reload && systemctl restart {PAPER}")


@contextmanager
def _tws_client(source: str, port: int, client_id: int):
    """A real TWS API session from `source` (an address of this machine) to gw's front, held open:
    handshake and START_API."""
    with socket.create_connection((GW, port), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(Hello(100, 178).encode())
        size = struct.unpack(">I", _read(sock, 4))[0]
        version = int(_read(sock, size).split(b"\0")[0])
        sock.sendall(encode_text(version, Out.START_API, (2, client_id, "")))
        yield sock


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "server closed"
        data += chunk
    return data


# The same session from a lab node (app-a, app-b), in its own network namespace: prints "ready" once
# START_API is sent, then holds the connection until its stdin closes.
HOLD = """
import socket, struct, sys
from ibgw_provision.tws.codec import encode_text
from ibgw_provision.tws.framing import Hello
from ibgw_provision.tws.messages import Out
address, port, client_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with socket.create_connection((address, port), timeout=5) as sock:
    sock.sendall(Hello(100, 178).encode())
    size = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))[0]
    version = int(sock.recv(size, socket.MSG_WAITALL).split(b"\\0")[0])
    sock.sendall(encode_text(version, Out.START_API, (2, client_id, "")))
    print("ready", flush=True)
    sys.stdin.read()
"""


class _Held:
    """A TWS API session held open from a lab node; close() ends it."""

    def __init__(self, node: str, port: int, client_id: int):
        self.proc = on_node(node, HOLD, GW, str(port), str(client_id))
        ready = self.proc.stdout.readline()  # type: ignore[union-attr]  # bounded: the socket's timeout
        if ready.strip() != "ready":
            self.close()
            raise AssertionError(f"no session from {node}: {self.proc.stderr.read()}")  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.returncode is None:
            self.close()


@pytest.fixture
def distinct_sources(lab, inv_path, tmp_path):
    """The suite's inventory with each app at its own source, provisioned (a front reload):
    smart-lean-0dte here (the operator), python-research on app-b, node-service on app-a."""
    sources = {
        "smart-lean-0dte": OPERATOR,
        "python-research": lab.addr("app-b"),
        "node-service": lab.addr("app-a"),
    }

    def edit(host: dict) -> None:
        for app in host["apps"]:
            app["sources"] = [f"{sources[app['name']]}/32"]

    path = suite_inventory(tmp_path, edit, name="sources")
    run = ibgw("provision", NAME, "-i", str(path))
    assert run.returncode == 0 and "service haproxy.service (reload)" in run.stdout, run.stdout
    yield str(path), sources
    assert ibgw("provision", NAME, "-i", inv_path).returncode == 0


def test_monitor_and_apps_show_connected_apps_by_name(lab, distinct_sources):
    inv, sources = distinct_sources
    port = HOST.gateway("paper").front_port
    with ExitStack() as stack:
        held = {
            1: stack.enter_context(_tws_client(OPERATOR, port, 1)),
            2: stack.enter_context(_Held("app-b", port, 2)),
            3: stack.enter_context(_Held("app-a", port, 3)),
        }
        # Not in the allowlist: from gw's own loopback (past the firewall), refused by the front.
        assert tws_hello(lab, NAME, "127.0.0.9", port) == b""
        proc = ibgw("monitor", NAME, "-i", inv, "--duration", "2", "--json", timeout=60)
        assert proc.returncode == 0, proc.stderr
        last = json.loads(proc.stdout.splitlines()[-1])
        paper = {s["address"]: s for s in last if s["mode"] == "paper"}
        for app, address in sources.items():
            assert paper[address]["apps"] == [app] and paper[address]["connections"] == 1
        assert paper["127.0.0.9"]["apps"] == [] and paper["127.0.0.9"]["connections"] == 0

        def connected() -> dict[str, bool]:
            rows = json.loads(ibgw("apps", "-i", inv, NAME, "--json", timeout=60).stdout)
            return {r["app"]: r["connected"] for r in rows if r["mode"] == "paper"}

        assert connected() == {"smart-lean-0dte": True, "python-research": True, "node-service": True}
        held[2].close()
        deadline = time.monotonic() + 10
        while connected()["python-research"]:
            assert time.monotonic() < deadline, "apps still shows python-research connected"
        assert connected() == {"smart-lean-0dte": True, "python-research": False, "node-service": True}


def test_a_restart_loop_is_degraded(inv_path, host):
    """Last in this module: the restarts stay on record for ten minutes."""
    host.run(f"systemctl reset-failed {PAPER}")  # earlier tests used up part of its start limit
    for _ in range(3):
        pid = host.check_output(f"systemctl show -p MainPID --value {PAPER}")
        host.run(f"kill -9 {pid}")
        deadline = time.monotonic() + 20
        while (
            host.check_output(f"systemctl show -p MainPID --value {PAPER}") in ("0", pid)
            or not host.service(PAPER).is_running
        ):
            assert time.monotonic() < deadline, "not restarted"
            time.sleep(0.25)
    code, report = _report(inv_path)
    assert code == 1 and report["status"] == "degraded"
    assert any(f["check"] == "unit" and "restart loop" in f["message"] for f in report["findings"])
