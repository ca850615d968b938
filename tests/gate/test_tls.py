"""front.tls end to end, every part a real process or server on 127.0.0.1:

    app -> ibgw tunnel -> [recorder: the "network"] -> HAProxy (mode tcp, PROXY v2)
        -> ibgw gate (TLS with client certificates) -> [recorder: the gateway's port] -> ibgw sim

The first recorder is the capture of the front port; the second tells whether any connection,
and any byte, reached the gateway.
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import signal
import socket
import ssl
import subprocess

import pytest
from ib_async import MarketOrder, Stock

from ibgw_provision.gate.audit import query
from ibgw_provision.pki.ca import Pki
from ibgw_provision.tws import Hello

from ..kit.gate import GateProcess, config_data, ib_async_app, ib_async_refused, run, write_config
from ..kit.sim import STEP, IbapiApp, contract, order, until
from ..kit.tls import TUNNEL, Haproxy, Recorder, TunnelProcess, free_port, make_pki, tls_files

APPS = ["trader", "watcher", "limited"]


class Stack:
    def __init__(self, directory, sim):
        self.dir = directory
        self.pki = make_pki(directory / "pki", APPS)
        self.gateway = Recorder(sim.port)
        self.front_socket = directory / "front.sock"
        data = config_data(
            directory,
            self.gateway.port,
            front_socket={"path": str(self.front_socket)},
            tls=tls_files(self.pki),
        )
        self.gate = GateProcess(write_config(directory / "gate.yml", data))
        # The gate asks the gateway its version at start-up, with a hello of its own (no app's bytes).
        run(until(lambda: self.gateway.connections == 1, message="the gate did not ask the gateway"))
        self.haproxy = Haproxy(self.front_socket)
        self.front = Recorder(self.haproxy.port)
        self.tunnels: list[TunnelProcess] = []

    def tunnel(self, cert_dir) -> TunnelProcess:
        self.tunnels.append(TunnelProcess(self.front.port, cert_dir))
        return self.tunnels[-1]

    def connections(self) -> list[dict]:
        return query(self.dir / "audit.sqlite")["connections"]

    def stop(self) -> None:
        for tunnel in self.tunnels:
            tunnel.stop()
        self.front.stop()
        self.haproxy.stop()
        assert self.gate.stop() == 0
        self.gateway.stop()


@pytest.fixture
def stack(short_dir, sim):
    stack = Stack(short_dir, sim)
    yield stack
    stack.stop()


def _serial(pki: Pki, app: str) -> str:
    return next(e.serial for e in pki.entries() if e.kind == "app" and e.name == app)


def test_ib_async_and_ibapi_trade_through_their_tunnels_and_the_wire_is_tls(stack, sim):
    trader = stack.tunnel(stack.pki.app_dir("trader"))

    async def scenario(ib, errors):
        assert ib.managedAccounts() == ["DU1234567"]
        [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        ticker = ib.reqMktData(spy)
        await until(lambda: ticker.last == ticker.last and ticker.last > 0)  # NaN until the first tick
        trade = ib.placeOrder(spy, MarketOrder("BUY", 2))
        await until(lambda: trade.orderStatus.status == "Filled", message=f"{trade.log}")
        return trade.order.orderId

    order_id = ib_async_app(trader.port, 1, scenario)
    assert sim.server.broker.orders[(1, order_id)].status == "Filled"

    limited = stack.tunnel(stack.pki.app_dir("limited"))
    app = IbapiApp().start(limited.port, client_id=3)  # ibapi-latest: protobuf, version 226
    try:
        assert app.client.serverVersion() == 226
        app.client.reqMktData(1, contract(), "", False, False, [])
        app.wait("tickPrice")
        ibapi_order = app.wait("nextValidId")[0][0]
        app.client.placeOrder(ibapi_order, contract(), order("BUY", 3, "LMT", lmtPrice=700.0))
        app.wait("orderStatus", lambda oid, status, *rest: oid == ibapi_order and status == "Filled")
    finally:
        app.stop()

    assert all(chunk[:2] == b"\x16\x03" for chunk in stack.front.upstream)  # each starts with a ClientHello
    assert len(stack.front.upstream) == 2
    assert stack.gateway.connections == 3  # the gate's version question, then one per app
    wire = stack.front.sent() + bytes(stack.front.downstream)
    for clear in (b"DU1234567", b"API\0", b"SPY", b"SMART"):
        assert clear not in wire
    assert b"DU1234567" in bytes(stack.gateway.downstream)  # ... yet it did cross, inside TLS
    rows = [r for r in stack.connections() if r["outcome"] == "accepted"]
    assert [(r["app"], r["client_id"], r["cert_serial"]) for r in rows] == [
        ("trader", 1, _serial(stack.pki, "trader")),
        ("limited", 3, _serial(stack.pki, "limited")),
    ]
    trader.wait_for(r"127\.0\.0\.1:\d+: via 127\.0\.0\.1:\d+ \(TLS \d+ ms\), \d+ bytes out")  # per connection


def _raw_tls(port: int, context: ssl.SSLContext) -> str:
    """Connect with TLS, send the TWS API hello as an app would, and read: how the connection ended."""
    with socket.create_connection(("127.0.0.1", port), STEP) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(Hello(100, 178).encode())
                data = tls.recv(100)
                return f"read {data!r}"
        except (ssl.SSLError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"


def _context(pki: Pki, cert_dir=None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_cert)
    if cert_dir is not None:
        context.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")
    return context


def _refused(stack: Stack, count: int, reason: str, gateway_connections: int = 0) -> None:
    """The gate audited `count` TLS refusals, the last for `reason`; the gateway saw no connection
    for an app beyond `gateway_connections` (the gate's own version question at start-up aside)."""

    def tls_rows():
        return [r for r in stack.connections() if r["client_id"] == -1]

    run(until(lambda: len(tls_rows()) == count, message=f"{stack.connections()}"))
    row = tls_rows()[-1]
    assert (row["outcome"], row["app"], row["version"]) == ("refused", None, 0)
    assert reason in row["reason"], row["reason"]
    assert row["source"].startswith("127.0.0.1:")
    assert stack.gateway.connections == 1 + gateway_connections
    assert gateway_connections or _only_the_gates_hello(stack)


def _only_the_gates_hello(stack: Stack) -> bool:
    [sent] = stack.gateway.upstream
    return sent.startswith(b"API\0") and len(sent) < 40


def test_refused_before_any_tws_api_byte_reaches_the_gate(stack, tmp_path):
    """No certificate, one from another CA, an expired one: closed in the TLS handshake."""
    assert _raw_tls(stack.front.port, _context(stack.pki)).startswith("SSLError")
    _refused(stack, 1, "peer did not return a certificate")

    other = Pki(tmp_path / "other")
    other.init("other")
    impostor = other.issue_app("trader")
    assert _raw_tls(stack.front.port, _context(stack.pki, impostor)).startswith("SSLError")
    _refused(stack, 2, "unable to get local issuer certificate")

    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = stack.pki.issue_app("watcher", days=2, not_before=past)
    tunnel = stack.tunnel(expired)
    assert run(_logon_fails(tunnel.port, 2)) == "closed"
    _refused(stack, 3, "certificate has expired")
    tunnel.wait_for(r"front refused the connection: .*certificate expired")


async def _logon_fails(port: int, client_id: int) -> str:
    """ib_async's connect through a tunnel whose app is refused: the connection closes, no logon."""
    from ib_async import IB

    ib = IB()
    try:
        await ib.connectAsync("127.0.0.1", port, clientId=client_id, timeout=2)
    except (ConnectionError, TimeoutError):
        return "closed"
    finally:
        ib.disconnect()
    return "logged on"


def test_a_revoked_certificate_is_refused_after_a_crl_reload_while_other_apps_stay(stack, sim):
    trader = stack.tunnel(stack.pki.app_dir("trader"))
    watcher_dir = stack.dir / "watcher-copy"
    shutil.copytree(stack.pki.app_dir("watcher"), watcher_dir)
    watcher = stack.tunnel(watcher_dir)

    async def scenario(ib, errors):
        [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        assert (await ib.reqCurrentTimeAsync()) is not None
        stack.pki.revoke("watcher")
        stack.gate.signal(signal.SIGHUP)
        stack.gate.wait_for("reloaded")
        assert await _logon_fails(watcher.port, 2) == "closed"
        trade = ib.placeOrder(spy, MarketOrder("BUY", 1))  # the trader, connected all along, still trades
        await until(lambda: trade.orderStatus.status == "Filled", message=f"{trade.log}")
        return errors

    assert ib_async_app(trader.port, 1, scenario) == []
    _refused(stack, 1, "certificate revoked", gateway_connections=1)  # the trader's
    run(until(lambda: all(r["ended"] for r in stack.connections())))
    accepted = [(r["app"], r["reason"]) for r in stack.connections() if r["outcome"] == "accepted"]
    assert accepted == [("trader", "client closed the connection")]  # one connection, from start to end
    watcher.wait_for(r"front refused the connection: .*certificate revoked")


def test_a_certificate_may_not_log_on_with_another_apps_client_id(stack):
    watcher = stack.tunnel(stack.pki.app_dir("watcher"))
    [(req_id, code, text)] = run(ib_async_refused(watcher.port, 1))  # the trader's client id
    assert (req_id, code) == (-1, 502)
    assert text == (
        "refused by ibgw gate: client id 1 belongs to app trader; this connection's certificate is "
        "app watcher's"
    )
    [row] = stack.connections()
    assert (row["app"], row["client_id"], row["outcome"], row["cert_serial"]) == (
        "trader",
        1,
        "refused",
        _serial(stack.pki, "watcher"),
    )
    assert stack.gateway.connections == 1 and _only_the_gates_hello(stack)  # refused before the gateway


def test_the_tunnel_closes_a_connection_while_the_front_is_down_and_the_next_one_retries(stack):
    port = free_port()
    tunnel = TunnelProcess(port, stack.pki.app_dir("trader"))
    stack.tunnels.append(tunnel)

    async def closed_at_once() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", tunnel.port)
        writer.write(Hello(100, 178).encode())
        data = await asyncio.wait_for(reader.read(), STEP)
        writer.close()
        return data

    assert run(closed_at_once()) == b""
    tunnel.wait_for(rf"front 127\.0\.0\.1:{port} unreachable, connection closed")
    front = Haproxy(stack.front_socket, port)  # the front is back, on the same address
    try:

        async def scenario(ib, errors):
            return ib.managedAccounts()

        assert ib_async_app(tunnel.port, 1, scenario) == ["DU1234567"]
    finally:
        front.stop()


@pytest.mark.skipif(shutil.which("stunnel") is None, reason="stunnel4 is not installed (scripts/deps.sh)")
def test_stunnel_with_the_printed_configuration_carries_an_app(stack):
    port = free_port()
    conf = stack.dir / "stunnel.conf"
    printed = subprocess.run(
        [*TUNNEL, "--front", f"127.0.0.1:{stack.front.port}", "--cert", str(stack.pki.app_dir("trader"))]
        + ["--listen", f"127.0.0.1:{port}", "--print-stunnel"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    conf.write_text(f"pid = {stack.dir / 'stunnel.pid'}\n" + printed.stdout)  # a global option: first
    stunnel = subprocess.Popen(["stunnel", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run(until(lambda: _listens(port), message="stunnel does not listen"))

        async def scenario(ib, errors):
            return ib.managedAccounts()

        assert ib_async_app(port, 1, scenario) == ["DU1234567"]
    finally:
        stunnel.terminate()
        stunnel.wait(STEP)
    [row] = [r for r in stack.connections() if r["outcome"] == "accepted"]
    assert (row["app"], row["cert_serial"]) == ("trader", _serial(stack.pki, "trader"))


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
    except OSError:
        return False
    return True
