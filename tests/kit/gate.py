"""Test helpers for the gate: a gate on a background loop, configs, raw and library clients through it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import struct
import subprocess
import sys
import time

import yaml
from ib_async import IB

from ibgw_provision.gate.audit import query
from ibgw_provision.gate.config import GateConfig
from ibgw_provision.gate.proxy import V2_SIGNATURE
from ibgw_provision.gate.server import Gate
from ibgw_provision.tws import Hello, parse_server_hello, read_frame

from .sim import STEP, LoggedProcess, LoopThread, RawClient, ibapi_client, until

LOOPBACK = "127.0.0.0/8"
APPS = [  # every app a test needs; each test uses the client ids it is about
    {"name": "trader", "client_id": 1, "sources": [LOOPBACK], "read_only": False},
    {"name": "watcher", "client_id": 2, "sources": [LOOPBACK], "read_only": True},
    {
        "name": "limited",
        "client_id": 3,
        "sources": [LOOPBACK],
        "read_only": False,
        "max_order_quantity": 5,
        "allowed_sec_types": ["STK"],
    },
    {"name": "remote", "client_id": 4, "sources": ["127.0.0.2/32"], "read_only": False},
    {"name": "office", "client_id": 5, "sources": ["10.0.1.5/32", "2001:db8::/64"], "read_only": False},
]
UNREGISTERED = 9
GATE = [sys.executable, "-m", "ibgw_provision.gate"]


def config_data(directory, upstream_port: int, **overrides) -> dict:
    """A gate config (as loaded from YAML) for a gateway on `upstream_port`, files under `directory`."""
    data = {
        "mode": "paper",
        "listen": {"host": "127.0.0.1", "port": 0},
        "upstream": {"host": "127.0.0.1", "port": upstream_port},
        "audit_db": str(directory / "audit.sqlite"),
        "admin_socket": str(directory / "gate.sock"),
        "metrics": {"host": "127.0.0.1", "port": 0},
        "handshake_timeout": 2,
        "apps": APPS,
    }
    return data | overrides


def write_config(path, data: dict):
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class RunningGate(LoopThread):
    """A Gate on its own event loop thread."""

    def __init__(self, data: dict):
        self.config = GateConfig.model_validate(data)
        super().__init__("ibgw.gate")
        self.gate = Gate(self.config)
        self.call(self.gate.start())

    @property
    def port(self) -> int:
        return self.gate.port

    def stop(self) -> None:
        self.close(self.gate.stop(), "gate")


class GateProcess(LoggedProcess):
    """`python -m ibgw_provision.gate gate --config FILE` in a subprocess."""

    def __init__(self, config_path):
        self.config_path = str(config_path)
        super().__init__(GATE + ["gate", "--config", self.config_path])

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Another command (gate status, audit, ...) with this gate's config."""
        return subprocess.run(
            GATE + [*args, "--config", self.config_path], capture_output=True, text=True, timeout=30
        )

    def signal(self, number: int) -> None:
        self.proc.send_signal(number)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(STEP)


def audited_connections(gate: RunningGate, count: int) -> list[dict]:
    """The audit log's connection rows, once `count` of them have ended (their end is written last)."""
    for _ in range(int(STEP / 0.01)):
        rows = query(gate.config.audit_db)["connections"]
        if sum(r["ended"] is not None for r in rows) >= count:
            return rows
        time.sleep(0.01)
    raise AssertionError(f"fewer than {count} connections ended: {rows}")


def audited_orders(db_path) -> list[dict]:
    """The audit log's order rows once none is still 'forwarding' (confirmed as the gateway's TCP
    acknowledges the bytes, just after they are written)."""
    for _ in range(int(STEP / 0.01)):
        rows = query(db_path)["orders"]
        if all(r["decision"] != "forwarding" for r in rows):
            return rows
        time.sleep(0.01)
    raise AssertionError(f"orders still 'forwarding': {rows}")


def proxy_v1(source: str, port: int = 40000) -> bytes:
    family = "TCP6" if ":" in source else "TCP4"
    target = "::1" if family == "TCP6" else "127.0.0.1"
    return f"PROXY {family} {source} {target} {port} 4102\r\n".encode()


def proxy_v2(source: str, port: int = 40000, command: int = 1) -> bytes:
    address = ipaddress.ip_address(source)
    target = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    body = address.packed + target.packed + struct.pack(">HH", port, 4102)
    family = 0x21 if address.version == 6 else 0x11  # INET6 / INET over STREAM
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body


def front_socket(gate: RunningGate) -> str:
    assert gate.config.front_socket is not None
    return str(gate.config.front_socket.path)


async def open_raw(
    port: int | str,
    client_id: int,
    *,
    max_version: int = 200,
    source: str = "127.0.0.1",
    proxy: bytes = b"",
) -> RawClient:
    """Hand-shake through the gate from `source` (after a PROXY header), send START_API; no wait for logon.

    A str `port` is the path of the gate's front socket (where a PROXY header is trusted)."""
    if isinstance(port, str):
        reader, writer = await asyncio.open_unix_connection(port)
    else:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(proxy + Hello(100, max_version).encode())
    version, _ = parse_server_hello(await asyncio.wait_for(read_frame(reader), STEP))
    start = ibapi_client(version, client_id)
    start.startApi()
    writer.write(start.conn.frames[-1])
    return RawClient(reader, writer, version)


async def logged_on(client: RawClient) -> RawClient:
    """`client` once the gateway has sent its accounts and next order id."""
    for _ in range(100):
        msg_id, fields = await client.next()
        if msg_id == 15:
            client.accounts = fields[1].split(",")
        elif msg_id == 9:
            client.next_valid_id = int(fields[1])
        if client.accounts and client.next_valid_id:
            return client
    raise AssertionError("no logon within 100 messages")


async def current_time(client: RawClient) -> int:
    client.send(49, 1)
    return int((await client.expect(49))[1])


def is_notice(code: int) -> bool:
    return 2100 <= code < 2200  # farm status and other informational "errors"


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def ib_async_app(port: int, client_id: int, scenario):
    """Run `scenario(ib, errors)` with an ib_async IB logged on through the gate; errors collects
    (req_id, code, text) from its error event, farm notices left out."""

    async def main():
        ib, errors = IB(), []
        ib.errorEvent += lambda req_id, code, text, contract: (
            is_notice(code) or errors.append((req_id, code, text))
        )
        await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=STEP)
        try:
            return await scenario(ib, errors)
        finally:
            ib.disconnect()

    return run(main())


async def ib_async_refused(port: int, client_id: int) -> list[tuple[int, int, str]]:
    """The errors ib_async reports when the gate refuses its logon (else it would wait out its timeout)."""
    ib, errors = IB(), []
    ib.errorEvent += lambda req_id, code, text, contract: (
        is_notice(code) or errors.append((req_id, code, text))
    )
    connecting = asyncio.create_task(ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=STEP))
    await until(lambda: not ib.client.conn.isConnected() and errors, message=f"{errors}")
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    ib.disconnect()
    return errors
