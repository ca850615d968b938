"""Gateway behaviour seen from raw protocol clients and the health probe: limits, errors, faults."""

import asyncio

import pytest
from simkit import STEP, RawClient, contract, order

from ibgw_provision.sim import admin
from ibgw_provision.sim.config import MAX_CLIENTS
from ibgw_provision.tws import Hello, Out, read_frame
from ibgw_provision.tws.probe import ProbeError, probe


def run(coro, timeout: float = 30):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate, timeout: float = STEP, message: str = "condition not met"):
    """Poll `predicate` every 10 ms until it holds, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(message)
        await asyncio.sleep(0.01)


def test_probe_reads_the_logon_and_times_a_round_trip(sim):
    result = run(probe("127.0.0.1", sim.port, client_id=9))
    assert (result.server_version, result.client_id, result.accounts, result.next_valid_id) == (200, 9, ("DU1234567",), 1)
    assert [code for code, _ in result.notices] == [2104, 2106, 2158]
    assert 0 < result.round_trip < STEP and result.server_time > 1_600_000_000


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

    with pytest.raises(ProbeError, match="connection to 127.0.0.1"):
        run(closed_port())
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


def _spy_line(client: RawClient, req_id: int) -> None:
    client.send(Out.REQ_MKT_DATA, 11, req_id, 756733, "", "", "", "", "", "", "SMART", "", "", "", "", 0, "", 0, 0, "")


def test_market_data_lines_are_limited_to_100(sim):
    async def scenario():
        first, second = await RawClient.connect(sim.port, 1), await RawClient.connect(sim.port, 2)
        for req_id in range(60):
            _spy_line(first, req_id)
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
        reply = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
            admin.execute(sim.server, "restart 0.5"), sim.loop))
        assert reply.startswith("ok")
        await client.read_until_closed()
        with pytest.raises(ProbeError, match="connection to"):
            await probe("127.0.0.1", sim.port, 1)
        await until(lambda: sim.server.listening, message="never listened again")
        assert (await probe("127.0.0.1", sim.port, 1)).accounts == ("DU1234567",)
        await client.close()

    run(scenario())


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
