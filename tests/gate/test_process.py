"""`python -m ibgw_provision.gate` as a process: kill -9 durability, signals, its commands, bad
config, and the gate behind a real HAProxy front sending PROXY v2."""

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import time

import pytest
from ib_async import MarketOrder, Stock

from ibgw_provision.tws import Hello

from ..kit.gate import (
    GATE,
    GateProcess,
    audited_connections,
    config_data,
    front_socket,
    ib_async_app,
    logged_on,
    open_raw,
    proxy_v1,
    proxy_v2,
    run,
    write_config,
)
from ..kit.sim import STEP, contract, order, until


@pytest.fixture
def gate_process(short_dir, sim):
    process = GateProcess(write_config(short_dir / "gate.yml", config_data(short_dir, sim.port)))
    process.dir = short_dir
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait(STEP)


def _decided(db_path, decision: str) -> set[int]:
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {row[0] for row in db.execute("SELECT order_id FROM orders WHERE decision = ?", (decision,))}
    finally:
        db.close()


def audited_connections_of(process: GateProcess) -> list[dict]:
    return json.loads(process.cli("audit", "--json").stdout)["connections"]


def test_kill_9_loses_no_forwarded_order(gate_process, sim):
    """Every order the gateway received is in the audit log, however abruptly the gate dies."""

    async def scenario():
        client = await logged_on(await open_raw(gate_process.port, 1))
        first = client.next_valid_id
        for order_id in range(first, first + 1000):
            client.send_ibapi(
                lambda c, oid=order_id: c.placeOrder(oid, contract(), order("BUY", 1, "LMT", lmtPrice=1.0))
            )
        await until(lambda: len(sim.server.broker.orders) >= 20)
        gate_process.proc.kill()  # SIGKILL, mid-stream
        assert gate_process.proc.wait(STEP) == -signal.SIGKILL
        await client.read_until_closed()

    run(scenario())
    received = {order_id for _, order_id in sim.server.broker.orders}
    for _ in range(100):  # let the gateway take what was already on its socket
        time.sleep(0.01)
        received, before = {order_id for _, order_id in sim.server.broker.orders}, received
        if received == before:
            break
    forwarded = _decided(gate_process.dir / "audit.sqlite", "forwarded")
    forwarding = _decided(gate_process.dir / "audit.sqlite", "forwarding")  # committed; sent or not
    # No order reached the gateway unaudited. 'forwarded' (the gateway's TCP acknowledged the
    # bytes) is not "acted on": this simulator drops what it had received but not yet handled
    # when its client resets, so `forwarded <= received` does not hold here (nor need it at IB).
    assert received and received <= forwarded | forwarding
    assert forwarded and not forwarded & forwarding
    restarted = GateProcess(gate_process.config_path)  # a restart closes the dead gate's connection rows
    assert restarted.stop() == 0
    [row] = list(sqlite3.connect(gate_process.dir / "audit.sqlite").execute("SELECT reason FROM connections"))
    assert row == ("gate exited without closing",)


def test_sigterm_ends_connections_and_exits_0(gate_process):
    async def scenario():
        client = await logged_on(await open_raw(gate_process.port, 1))
        gate_process.signal(signal.SIGTERM)
        assert await client.read_until_closed() is not None
        await client.close()

    run(scenario())
    assert gate_process.proc.wait(STEP) == 0
    gate_process.wait_for(r"INFO stopped")
    assert not (gate_process.dir / "gate.sock").exists()
    assert [r["reason"] for r in audited_connections_of(gate_process)] == ["gate stopped"]


def test_signals_and_commands_drive_the_kill_switch(gate_process):
    def status() -> dict:
        done = gate_process.cli("gate", "status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    gate_process.signal(signal.SIGUSR1)
    gate_process.wait_for(r"kill switch ON by SIGUSR1")
    assert status()["halted"] is True
    gate_process.signal(signal.SIGUSR2)
    gate_process.wait_for(r"kill switch OFF by SIGUSR2")
    assert gate_process.cli("gate", "halt").stdout == "halted: new orders are refused\n"
    table = gate_process.cli("gate", "status").stdout
    assert "trading HALTED" in table and "trader" in table
    assert gate_process.cli("gate", "resume").stdout == "resumed: orders pass\n"
    assert status()["halted"] is False
    assert gate_process.stop() == 0
    done = gate_process.cli("gate", "status")
    assert done.returncode == 1 and "no gate answers on" in done.stderr and "Traceback" not in done.stderr


def test_audit_command(gate_process):
    async def scenario():
        client = await logged_on(await open_raw(gate_process.port, 2))
        client.send_ibapi(lambda c: c.placeOrder(client.next_valid_id, contract(), order("BUY", 7, "MKT")))
        await client.error()
        await client.close()
        refused = await open_raw(gate_process.port, 9)
        await refused.error()

    run(scenario())
    gate_process.stop()
    rows = json.loads(gate_process.cli("audit", "--json", "--app", "watcher", "--since", "15m").stdout)
    assert [(r["app"], r["outcome"]) for r in rows["connections"]] == [("watcher", "accepted")]
    [placed] = rows["orders"]
    assert (placed["symbol"], placed["quantity"], placed["decision"], placed["reason"]) == (
        "SPY",
        "7",
        "refused",
        "app watcher is read-only",
    )
    everything = gate_process.cli("audit").stdout
    assert "connections (2)" in everything and "order requests (1)" in everything and "refused" in everything
    future = json.loads(gate_process.cli("audit", "--json", "--since", "2999-01-01T00:00").stdout)
    assert future == {"connections": [], "orders": []}
    done = gate_process.cli("audit", "--since", "yesterday")
    assert done.returncode == 2 and "neither an ISO time" in done.stderr


@pytest.mark.parametrize(
    "change, complaint",
    [
        (lambda d: d | {"mode": "demo"}, "mode: Input should be 'paper' or 'live'"),
        (
            lambda d: d | {"listen": {"host": "127.0.0.1", "port": 70000}},
            "listen.port: Input should be less than",
        ),
        (lambda d: d | {"extra": 1}, "extra: unknown field"),
        (lambda d: d | {"listen": None}, "give listen, front_socket or both"),
        (lambda d: d | {"apps": [d["apps"][0] | {"sources": ["10.0.1.5/24"]}]}, "has host bits set"),
        (
            lambda d: d | {"apps": [d["apps"][0] | {"read_only": "maybe"}]},
            "apps[0].read_only: Input should be a valid boolean",
        ),
        (
            lambda d: d | {"apps": [d["apps"][0] | {"max_order_quantity": 0}]},
            "max_order_quantity: Input should be greater than 0",
        ),
        (
            lambda d: d | {"apps": [d["apps"][0] | {"allowed_sec_types": []}]},
            "allowed_sec_types: List should have at least 1",
        ),
        (
            lambda d: d | {"apps": [d["apps"][0], d["apps"][1] | {"client_id": 1}]},
            "client_id 1 appears more than once",
        ),
        (lambda d: d | {"max_frame": 10}, "max_frame: Input should be greater than or equal to 1024"),
    ],
)
def test_bad_config_is_a_clear_error_with_exit_2(short_dir, change, complaint):
    path = write_config(short_dir / "gate.yml", change(config_data(short_dir, 4002)))
    done = subprocess.run(GATE + ["gate", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert (done.returncode, "Traceback" in done.stderr) == (2, False)
    assert complaint in done.stderr and str(path) in done.stderr


def test_unreadable_config_and_missing_option_exit_2(short_dir):
    (short_dir / "bad.yml").write_text("mode: [paper\n")
    for args in (
        ["gate", "--config", str(short_dir / "bad.yml")],
        ["gate", "--config", str(short_dir / "none.yml")],
        ["gate"],
        ["gate", "status"],
    ):
        done = subprocess.run(GATE + args, capture_output=True, text=True, timeout=30)
        assert (done.returncode, "Traceback" in done.stderr) == (2, False), done.stderr


def test_a_port_in_use_or_a_running_gate_is_a_clear_error(gate_process, short_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = config_data(short_dir, 4002) | {
            "listen": {"host": "127.0.0.1", "port": port},
            "admin_socket": str(short_dir / "other.sock"),
        }
        done = subprocess.run(
            GATE + ["gate", "--config", str(write_config(short_dir / "taken.yml", data))],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert (done.returncode, "Traceback" in done.stderr) == (1, False)
    assert (
        f"cannot start the gate: [Errno 98] error while attempting to bind on address ('127.0.0.1', {port})"
        in done.stderr
    )

    async def second_gate():
        client = await logged_on(await open_raw(gate_process.port, 1))
        second = subprocess.run(
            GATE + ["gate", "--config", gate_process.config_path], capture_output=True, text=True, timeout=30
        )
        assert second.returncode == 1 and "another gate is running on admin socket" in second.stderr
        assert gate_process.cli("gate", "status").returncode == 0  # the running gate keeps its socket
        assert [r["ended"] for r in audited_connections_of(gate_process)] == [None]  # nor has its log touched
        await client.close()

    run(second_gate())


@contextlib.contextmanager
def haproxy_front(server: str):
    """A real HAProxy on 127.0.0.1 (a free port) in front of `server` ("unix@PATH" or "HOST:PORT"),
    sending PROXY v2; yields its port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        front_port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile("w", suffix=".cfg") as cfg:
        cfg.write(
            f"defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1m\n    timeout server 1m\n"
            f"listen front\n    bind 127.0.0.1:{front_port}\n"
            f"    server gate {server} send-proxy-v2\n"
        )
        cfg.flush()
        haproxy = subprocess.Popen(
            ["haproxy", "-db", "-f", cfg.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:

            async def wait_for_front():
                for _ in range(200):
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", front_port)
                        writer.close()
                        return
                    except OSError:
                        await asyncio.sleep(0.02)
                raise AssertionError("haproxy did not start")

            run(wait_for_front())
            yield front_port
        finally:
            haproxy.terminate()
            haproxy.wait(STEP)


def test_behind_haproxy_sending_proxy_v2_to_the_front_socket(start_gate, sim, short_dir):
    gate = start_gate(sim.port, front_socket={"path": str(short_dir / "front.sock")})
    assert stat.S_IMODE(os.stat(front_socket(gate)).st_mode) == 0o660
    with haproxy_front(f"unix@{front_socket(gate)}") as front_port:

        async def scenario(ib, errors):
            [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
            trade = ib.placeOrder(spy, MarketOrder("BUY", 1))
            await until(lambda: trade.orderStatus.status == "Filled")
            return ib.client.conn.transport.get_extra_info("sockname")[1]

        client_port = ib_async_app(front_port, 1, scenario)
    sources = [r["source"] for r in audited_connections(gate, 0) if r["outcome"] == "accepted"]
    assert sources == [f"127.0.0.1:{client_port}"]  # the app's own port, from the PROXY header


def test_a_proxy_header_on_the_tcp_port_is_not_trusted(gate_process, sim):
    """A local process forging PROXY headers to the gate's TCP port (directly, or through a
    front of its own) is not believed: client 4 may connect only from 127.0.0.2."""

    async def forged(port: int, header: bytes) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(header + Hello(100, 200).encode())
        assert await asyncio.wait_for(reader.read(), STEP) == b""  # not a TWS hello: closed
        writer.close()

    run(forged(gate_process.port, proxy_v2("127.0.0.2")))
    run(forged(gate_process.port, proxy_v1("127.0.0.2")))
    with haproxy_front(f"127.0.0.1:{gate_process.port}") as front_port:
        run(forged(front_port, b""))
    assert not sim.server.sessions and not sim.server.broker.orders
    assert audited_connections_of(gate_process) == []
    gate_process.wait_for(r"dropped: no API prefix")
