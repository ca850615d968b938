"""`ibgw health`, `ibgw monitor` and `ibgw apps` against the provisioned local host."""

from __future__ import annotations

import json
import socket
import struct
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

from .conftest import LOCAL, fresh_host, ibgw

SCHEMA = json.loads((Path(health.__file__).parent / "health.schema.json").read_text())
PAPER = layout.gateway_unit("paper")


@pytest.fixture(scope="module")
def inv_path(tmp_path_factory):
    return str(fresh_host(LOCAL, tmp_path_factory.mktemp("health"))[0])


@pytest.fixture
def host(inv_path, ssh_host):
    return ssh_host


def _health(inv_path: str, *flags: str):
    proc = ibgw("health", "local", "-i", inv_path, "--timeout", "10", *flags, timeout=120)
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
    assert [u["name"] for u in report["units"]] == state.units(inventory.load(LOCAL).hosts["local"])
    brief = _health(inv_path, "--brief")
    expected = {0: "IBGW OK - local: 2/2 gateways answer", 1: "IBGW WARNING - local: load "}  # as above
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
    gw = "127.0.0.1:14002"
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
    """A real TWS API session from `source`, held open: handshake and START_API."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
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


@pytest.fixture
def distinct_sources(inv_path, tmp_path):
    """The local inventory with each app on its own loopback address, provisioned (a front reload)."""
    text = Path(inv_path).read_text()
    for i, name in enumerate(("python-research", "node-service"), start=2):
        text = text.replace(
            f"- name: {name}\n        client_id: {i}\n        modes: [paper]\n"
            f"        sources: [127.0.0.1/32]",
            f"- name: {name}\n        client_id: {i}\n"
            f"        modes: [paper]\n        sources: [127.0.0.{i}/32]",
        )
    path = tmp_path / "sources.yml"
    path.write_text(text)
    assert text.count("127.0.0.2/32") == 1 and text.count("127.0.0.3/32") == 1
    run = ibgw("provision", "local", "-i", str(path))
    assert run.returncode == 0 and "service haproxy.service (reload)" in run.stdout, run.stdout
    yield str(path)
    assert ibgw("provision", "local", "-i", inv_path).returncode == 0


def test_monitor_and_apps_show_connected_apps_by_name(distinct_sources):
    port = 14004
    with ExitStack() as stack:
        held = {cid: stack.enter_context(_tws_client(f"127.0.0.{cid}", port, cid)) for cid in (1, 2, 3)}
        with pytest.raises(OSError):  # not in the allowlist: refused at the front
            with _tws_client("127.0.0.9", port, 9):
                pass
        proc = ibgw("monitor", "local", "-i", distinct_sources, "--duration", "2", "--json", timeout=60)
        assert proc.returncode == 0, proc.stderr
        last = json.loads(proc.stdout.splitlines()[-1])
        paper = {s["address"]: s for s in last if s["mode"] == "paper"}
        for cid, app in ((1, "smart-lean-0dte"), (2, "python-research"), (3, "node-service")):
            assert paper[f"127.0.0.{cid}"]["apps"] == [app] and paper[f"127.0.0.{cid}"]["connections"] == 1
        assert paper["127.0.0.9"]["apps"] == [] and paper["127.0.0.9"]["connections"] == 0

        def connected() -> dict[str, bool]:
            rows = json.loads(ibgw("apps", "-i", distinct_sources, "local", "--json", timeout=60).stdout)
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
