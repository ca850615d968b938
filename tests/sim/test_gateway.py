"""Gateway behaviour seen from raw protocol clients and the health probe: limits, errors, faults."""

import asyncio
import contextlib
import logging
import socket

import pytest
from ibapi.protobuf.Contract_pb2 import Contract
from ibapi.protobuf.Order_pb2 import Order
from ibapi.protobuf.PlaceOrderRequest_pb2 import PlaceOrderRequest

from ibgw_provision.sim import admin
from ibgw_provision.sim import session as sim_session
from ibgw_provision.sim.config import MAX_CLIENTS
from ibgw_provision.tws import Hello, Out, encode_protobuf, encode_server_hello, read_frame, versions
from ibgw_provision.tws.probe import ProbeError, probe

from ..kit.sim import STEP, RawClient, contract, order, until


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def _max_pending(session, seconds: float = 0.5) -> int:
    """The most bytes `session` holds for its client, sampled every 10 ms for `seconds`."""
    most = 0
    for _ in range(int(seconds / 0.01)):
        most = max(most, session.pending_bytes)
        await asyncio.sleep(0.01)
    return most


def test_probe_reads_the_logon_and_times_a_round_trip(sim):
    result = run(probe("127.0.0.1", sim.port, client_id=9))
    assert (result.server_version, result.client_id, result.accounts, result.next_valid_id) == (
        200,
        9,
        ("DU1234567",),
        1,
    )
    assert [code for code, _ in result.notices] == [2104, 2106, 2158]
    assert 0 < result.round_trip < STEP and result.server_time > 1_600_000_000


def test_probe_binds_the_source_address(sim, caplog):
    caplog.set_level(logging.INFO, logger="ibgw.sim")
    assert run(probe("127.0.0.1", sim.port, client_id=9, source="127.0.0.2")).client_id == 9
    assert any("client 9 connected from 127.0.0.2:" in r.getMessage() for r in caplog.records)


@contextlib.asynccontextmanager
async def _fake_gateway(version: int):
    """A server that answers the handshake with `version`, then says nothing. Yields its port and an
    event set once the client has closed its socket."""
    closed = asyncio.Event()

    async def serve(reader, writer):
        try:
            await reader.readexactly(4)
            await read_frame(reader)
            writer.write(encode_server_hello(version, "20250117 09:30:00 EST"))
            while await reader.read(4096):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            closed.set()
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], closed


def test_probe_times_out_and_closes_its_socket_when_the_gateway_goes_silent():
    async def scenario():
        async with _fake_gateway(200) as (port, closed):
            with pytest.raises(ProbeError, match="no complete answer"):
                await probe("127.0.0.1", port, 1, timeout=0.3)
            await asyncio.wait_for(closed.wait(), STEP)

    run(scenario())


def test_probe_refuses_a_version_it_did_not_offer():
    async def scenario():
        async with _fake_gateway(versions.LATEST) as (port, closed):
            with pytest.raises(ProbeError, match="outside the offered"):
                await probe("127.0.0.1", port, 1, timeout=STEP)
            await asyncio.wait_for(closed.wait(), STEP)

    run(scenario())


def test_live_mode_reports_u_accounts(start_sim):
    sim = start_sim(mode="live", accounts=("U111", "U222"))
    assert run(probe("127.0.0.1", sim.port, client_id=1)).accounts == ("U111", "U222")


def test_probe_errors_are_clear():
    async def closed_port():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await probe("127.0.0.1", port, 1, timeout=STEP)

    async def silent_server():
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        async with server:
            await probe("127.0.0.1", server.sockets[0].getsockname()[1], 1, timeout=0.3)

    with pytest.raises(ProbeError, match="connection to 127.0.0.1") as refused:
        run(closed_port())
    assert refused.value.code == 502
    with pytest.raises(ProbeError, match="no complete answer"):
        run(silent_server())


def test_three_clients_at_once_and_a_duplicate_id_gets_326(sim):
    async def scenario():
        clients = [await RawClient.connect(sim.port, client_id) for client_id in (1, 2, 3)]
        with pytest.raises(ProbeError) as refused:
            await probe("127.0.0.1", sim.port, client_id=2)
        assert refused.value.code == 326
        for client in clients:  # all three still served
            client.send(Out.REQ_CURRENT_TIME, 1)
            assert int((await client.expect(49))[1]) > 0
        await clients[1].close()
        await until(lambda: 2 not in sim.server.sessions)
        assert (await probe("127.0.0.1", sim.port, client_id=2)).client_id == 2
        for client in clients:
            await client.close()

    run(scenario())


def test_at_most_32_clients(sim):
    async def scenario():
        clients = [await RawClient.connect(sim.port, n) for n in range(MAX_CLIENTS)]
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(Hello(100, 200).encode())
        with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
            await read_frame(reader)
        writer.close()
        await clients.pop().close()
        await until(lambda: len(sim.server.connections) < MAX_CLIENTS)
        clients.append(await RawClient.connect(sim.port, 99))
        for client in clients:
            await client.close()

    run(scenario())


def test_unknown_and_malformed_requests_get_errors_not_a_hang_up(sim):
    async def scenario():
        client = await RawClient.connect(sim.port, 1)
        client.send(Out.REQ_SCANNER_PARAMETERS, 1)
        assert (await client.error())[1] == 321
        client.send(Out.REQ_MKT_DATA, 11, "not-a-number")
        assert (await client.error())[1] == 320
        client.send(Out.REQ_CURRENT_TIME, 1)
        assert int((await client.expect(49))[1]) > 0
        await client.close()

    run(scenario())


def test_unreadable_order_values_get_320_not_a_hang_up(sim):
    async def scenario():
        text = await RawClient.connect(sim.port, 1)
        text.send_ibapi(lambda c: c.placeOrder(5, contract(), order("BUY", "NaN", "MKT")))
        assert (await text.error())[1] == 320
        pb = await RawClient.connect(sim.port, 2, max_version=versions.LATEST)
        request = PlaceOrderRequest(
            orderId=5,
            contract=Contract(symbol="SPY", secType="STK", exchange="SMART"),
            order=Order(action="BUY", totalQuantity="lots", orderType="MKT"),
        )
        pb.writer.write(encode_protobuf(Out.PLACE_ORDER, request.SerializeToString()))
        assert (await pb.error())[1] == 320
        assert not sim.server.broker.orders
        for client in (text, pb):
            await client.close()

    run(scenario())


def test_a_client_that_does_not_read_is_not_served_more(sim):
    async def scenario():
        greedy, other = await RawClient.connect(sim.port, 1), await RawClient.connect(sim.port, 2)
        for req_id in range(100):  # about 7 MB of option contract details
            greedy.send_ibapi(lambda c, req_id=req_id: c.reqContractDetails(req_id, contract(sec_type="OPT")))
        other.send(Out.REQ_CURRENT_TIME, 1)
        assert int((await other.expect(49))[1]) > 0
        assert await _max_pending(sim.server.sessions[1]) < 1 << 20
        for req_id in range(100):  # nothing was lost, only held back
            assert int((await greedy.expect(52, limit=200))[1]) == req_id
        for client in (greedy, other):
            await client.close()

    run(scenario())


async def _slow_reader(port: int, client_id: int) -> RawClient:
    """A client with a tiny receive buffer that subscribes 100 lines and then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # so the server's side fills up soon
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    client = await RawClient.connect(port, client_id, sock=sock)
    for req_id in range(100):
        _spy_line(client, req_id)
    return client


def test_market_data_skips_a_congested_client(start_sim, monkeypatch):
    monkeypatch.setattr(sim_session, "CONGESTED_BYTES", 64 << 10)
    sim = start_sim(tick_interval=0.005)

    async def scenario():
        slow, other = await _slow_reader(sim.port, 1), await RawClient.connect(sim.port, 2)
        session = sim.server.sessions[1]
        await until(lambda: session.congested, timeout=3 * STEP)
        assert await _max_pending(session) < sim_session.CONGESTED_BYTES + (
            64 << 10
        )  # one step's ticks at most
        other.send(Out.REQ_CURRENT_TIME, 1)
        assert int((await other.expect(49))[1]) > 0
        for client in (slow, other):
            await client.close()

    run(scenario())


def test_a_client_too_far_behind_is_dropped(start_sim, monkeypatch):
    monkeypatch.setattr(
        sim_session, "MAX_PENDING_BYTES", 64 << 10
    )  # below CONGESTED_BYTES: nothing is skipped
    sim = start_sim(tick_interval=0.005)

    async def scenario():
        slow, other = await _slow_reader(sim.port, 1), await RawClient.connect(sim.port, 2)
        await until(lambda: 1 not in sim.server.sessions, timeout=3 * STEP, message="never dropped")
        other.send(Out.REQ_CURRENT_TIME, 1)
        assert int((await other.expect(49))[1]) > 0
        assert sim.server.lines_in_use() == 0
        for client in (slow, other):
            await client.close()

    run(scenario())


def _spy_line(client: RawClient, req_id: int) -> None:
    client.send(
        Out.REQ_MKT_DATA, 11, req_id, 756733, "", "", "", "", "", "", "SMART", "", "", "", "", 0, "", 0, 0, ""
    )


def test_market_data_lines_are_limited_to_100(sim):
    async def scenario():
        first, second = await RawClient.connect(sim.port, 1), await RawClient.connect(sim.port, 2)
        for req_id in range(60):
            _spy_line(first, req_id)
        await until(lambda: sim.server.lines_in_use() == 60)
        for req_id in range(41):
            _spy_line(second, req_id)
        assert await second.error() == (40, 101, "Max number of tickers has been reached")
        second.send(Out.CANCEL_MKT_DATA, 2, 0)
        await until(lambda: sim.server.lines_in_use() == 99)
        _spy_line(second, 40)
        await until(lambda: sim.server.lines_in_use() == 100)
        await first.close()
        await second.close()

    run(scenario())


def test_read_only_refuses_orders_with_321(start_sim):
    sim = start_sim(read_only=True)

    async def scenario():
        client = await RawClient.connect(sim.port, 1)
        client.send_ibapi(lambda c: c.placeOrder(5, contract(), order("BUY", 10, "MKT")))
        req_id, code, text = await client.error()
        assert (req_id, code) == (5, 321) and "Read-Only" in text
        await client.close()

    run(scenario())


def test_daily_restart_drops_clients_refuses_then_readmits(sim):
    async def scenario():
        client = await RawClient.connect(sim.port, 1)
        reply = await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(admin.execute(sim.server, "restart 1"), sim.loop)
        )
        assert reply.startswith("ok")
        await client.read_until_closed()
        with pytest.raises(ProbeError, match="connection to"):
            await probe("127.0.0.1", sim.port, 1)
        await until(lambda: sim.server.listening, message="never listened again")
        assert (await probe("127.0.0.1", sim.port, 1)).accounts == ("DU1234567",)
        await client.close()

    run(scenario())


def test_overlapping_restarts_listen_again_once(sim):
    async def restart_twice():  # on the simulator's loop
        await asyncio.gather(sim.server.restart(0.2), sim.server.restart(0.2))

    async def scenario():
        client = await RawClient.connect(sim.port, 1)
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(restart_twice(), sim.loop))
        await client.read_until_closed()
        await until(lambda: sim.server.listening, message="never listened again")
        assert (await probe("127.0.0.1", sim.port, 1)).accounts == ("DU1234567",)
        await client.close()

    run(scenario())  # a second listener on the port would fail, and fail the simulator's teardown


def test_injected_latency_delays_answers(sim):
    def set_latency(millis):
        return sim.call(admin.execute(sim.server, f"latency {millis}"))

    assert set_latency(300) == "ok latency 300 ms"
    assert run(probe("127.0.0.1", sim.port, 1)).round_trip >= 0.3
    set_latency(0)
    assert run(probe("127.0.0.1", sim.port, 1)).round_trip < 0.3


def test_admin_rejects_bad_commands(sim):
    for line in ("", "reboot", "latency", "latency -5", "restart soon"):
        assert sim.call(admin.execute(sim.server, line)).startswith("error")
