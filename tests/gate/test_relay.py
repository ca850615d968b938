"""The relay seen from raw protocol clients: sources and PROXY headers, the handshake, bad frames,
slow clients, the kill switch, status and metrics, the audit log; fuzzed end to end."""

import asyncio
import logging
import struct
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ibapi.order_cancel import OrderCancel

from ibgw_provision.gate import admin
from ibgw_provision.gate.audit import query
from ibgw_provision.tws import API_PREFIX, Hello, frame, parse_server_hello, read_frame

from ..kit.gate import (
    APPS,
    audited_connections,
    audited_orders,
    current_time,
    front_socket,
    logged_on,
    open_raw,
    proxy_v1,
    proxy_v2,
    run,
)
from ..kit.sim import STEP, contract, ibapi_request, order, until


async def _refusal(client) -> tuple[int, int, str]:
    error = await client.error()
    assert await client.read_until_closed() == []
    return error


async def _closed(reader, limit: int = 100) -> bool:
    """Does the gate close the connection (after at most `limit` messages)?"""
    for _ in range(limit):
        if not await asyncio.wait_for(reader.read(65536), STEP):
            return True
    return False


def test_a_bound_source_address_is_checked(gate):
    async def scenario():
        remote = await logged_on(await open_raw(gate.port, 4, source="127.0.0.2"))
        assert await current_time(remote) > 1_600_000_000
        elsewhere = await open_raw(gate.port, 4, source="127.0.0.3")
        assert await _refusal(elsewhere) == (
            -1,
            502,
            "refused by ibgw gate: client id 4 (app remote) may not connect from 127.0.0.3",
        )
        await remote.close()

    run(scenario())


@pytest.mark.parametrize("header", [proxy_v1, proxy_v2], ids=["v1", "v2"])
def test_the_proxy_header_gives_the_source(start_gate, sim, short_dir, header):
    gate = start_gate(sim.port, front_socket={"path": str(short_dir / "front.sock")})
    front = front_socket(gate)

    async def scenario():
        office = await logged_on(await open_raw(front, 5, proxy=header("10.0.1.5")))
        assert await current_time(office) > 1_600_000_000
        await office.close()
        await until(lambda: not gate.gate.connected)
        v6 = await open_raw(front, 5, proxy=header("2001:db8::9"))  # app office is also on 2001:db8::/64
        assert (await logged_on(v6)).accounts == ["DU1234567"]
        spoofed = await open_raw(front, 1, proxy=header("10.9.9.9"))  # app trader is on 127.0.0.0/8 only
        assert await _refusal(spoofed) == (
            -1,
            502,
            "refused by ibgw gate: client id 1 (app trader) may not connect from 10.9.9.9",
        )
        await v6.close()

    run(scenario())
    sources = [
        (r["client_id"], r["source"].rsplit(":", 1)[0], r["outcome"])
        for r in query(gate.config.audit_db)["connections"]
    ]
    assert sources == [
        (5, "10.0.1.5", "accepted"),
        (5, "[2001:db8::9]", "accepted"),
        (1, "10.9.9.9", "refused"),
    ]


def test_a_missing_or_local_proxy_header_admits_nobody(start_gate, sim, short_dir, caplog):
    gate = start_gate(sim.port, front_socket={"path": str(short_dir / "front.sock")})
    front = front_socket(gate)

    async def scenario():
        local = await open_raw(front, 1, proxy=proxy_v2("10.0.1.5", command=0))  # LOCAL: no source address
        assert await _refusal(local) == (-1, 502, "refused by ibgw gate: the front named no source address")
        reader, writer = await asyncio.open_unix_connection(front)
        writer.write(Hello(100, 200).encode())  # no header at all: dropped before the gateway is contacted
        assert await _closed(reader)
        writer.close()

    run(scenario())
    assert any("expected a PROXY protocol header" in r.getMessage() for r in caplog.records)
    assert not sim.server.sessions


def test_an_incomplete_handshake_is_closed_after_the_timeout(start_gate, sim, caplog):
    gate = start_gate(sim.port, handshake_timeout=0.2)

    async def scenario():
        reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
        writer.write(Hello(100, 200).encode())
        parse_server_hello(await read_frame(reader))  # answered by the gate itself, then no START_API
        assert await _closed(reader)
        writer.close()

    run(scenario())
    assert any("handshake not complete within 0.2s" in r.getMessage() for r in caplog.records)
    assert not sim.server.sessions and query(gate.config.audit_db)["connections"] == []


def test_an_oversized_frame_is_refused(start_gate, sim):
    gate = start_gate(sim.port, max_frame=4096)

    async def scenario():
        client = await logged_on(await open_raw(gate.port, 1))
        client.writer.write(struct.pack(">I", 4097) + b"49\0" + b"x" * 100)
        assert await _closed(client.reader)

    run(scenario())
    [row] = audited_connections(gate, 1)
    assert row["reason"] == "refused a frame of 4097 bytes (max_frame 4096)"


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"x1\0", "unreadable message: bad message id b'x1'"),
        (b"71\x002\x001\x00\x00", "START_API sent twice"),
    ],
)
def test_a_frame_that_must_not_pass_ends_the_connection(gate, payload, reason):
    async def scenario():
        client = await logged_on(await open_raw(gate.port, 1))
        client.writer.write(frame(payload) + frame(b"49\x001\x00"))
        assert await _closed(client.reader)

    run(scenario())
    assert audited_connections(gate, 1)[0]["reason"] == reason


def test_a_slow_client_is_disconnected_and_others_carry_on(start_gate, sim):
    gate = start_gate(sim.port, client_buffer=64 * 1024)

    async def scenario():
        quick = await logged_on(await open_raw(gate.port, 1))
        slow = await logged_on(await open_raw(gate.port, 3))
        for req_id in range(200):  # each answer is the option chain: far more than the buffer
            slow.send_ibapi(lambda c, r=req_id: c.reqContractDetails(r, contract(sec_type="OPT")))
        for _ in range(50):
            if not gate.gate.stats["limited"].connected:
                break
            assert await current_time(quick) > 1_600_000_000
        assert not gate.gate.stats["limited"].connected
        await quick.close()

    run(scenario())
    reasons = {r["client_id"]: r["reason"] for r in audited_connections(gate, 2)}
    assert reasons[3] == "slow client: more than 65536 bytes queued"


def test_the_kill_switch_refuses_new_orders_and_survives_a_restart(start_gate, sim):
    gate = start_gate(sim.port)

    async def place(client, quantity: int, **fields) -> int:
        order_id = client.next_valid_id
        client.next_valid_id += 1
        client.send_ibapi(
            lambda c: c.placeOrder(order_id, contract(), order("BUY", quantity, "LMT", **fields))
        )
        return order_id

    async def halted_session(port):
        client = await logged_on(await open_raw(port, 1))
        resting = await place(client, 1, lmtPrice=100.0)
        await client.expect(3)  # orderStatus: it rests
        assert await admin.command(gate.config.admin_socket, "halt") == {"ok": True, "halted": True}
        refused = await place(client, 2, lmtPrice=100.0)
        assert await client.error() == (
            refused,
            321,
            "refused by ibgw gate: trading is halted (ibgw gate halt); no new orders until ibgw gate resume",
        )
        client.send_ibapi(lambda c: c.cancelOrder(resting, OrderCancel()))
        assert (await client.error())[:2] == (resting, 202)  # cancels still pass: the gateway cancels it
        await client.close()

    run(halted_session(gate.port))
    gate.stop()
    gate = start_gate(sim.port)  # same audit log

    async def after_restart(port):
        client = await logged_on(await open_raw(port, 1))
        refused = await place(client, 1, lmtPrice=100.0)
        assert (await client.error())[:2] == (refused, 321)
        assert await admin.command(gate.config.admin_socket, "resume") == {"ok": True, "halted": False}
        passed = await place(client, 1, lmtPrice=100.0)
        assert int((await client.expect(3))[0]) == passed  # orderStatus
        await client.close()

    run(after_restart(gate.port))
    decisions = [(r["request"], r["decision"]) for r in audited_orders(gate.config.audit_db)]
    assert decisions == [
        ("placeOrder", "forwarded"),
        ("placeOrder", "refused"),
        ("cancelOrder", "forwarded"),
        ("placeOrder", "refused"),
        ("placeOrder", "forwarded"),
    ]


def test_status_and_metrics(gate):
    async def scenario():
        trader = await logged_on(await open_raw(gate.port, 1))
        await current_time(trader)
        status = await admin.command(gate.config.admin_socket, "status")
        with urllib.request.urlopen(
            f"http://127.0.0.1:{gate.gate.metrics_port}/metrics", timeout=STEP
        ) as reply:
            metrics = reply.read().decode()
        await trader.close()
        return status, metrics

    status, metrics = run(scenario())
    trader = next(a for a in status["apps"] if a["name"] == "trader")
    assert (status["halted"], trader["connected"], trader["source"].split(":")[0]) == (
        False,
        True,
        "127.0.0.1",
    )
    assert (
        trader["messages_in"] == 2 and trader["messages_out"] >= 6
    )  # START_API, reqCurrentTime; logon, time
    assert 'ibgw_gate_app_connected{mode="paper",app="trader",client_id="1"} 1' in metrics
    assert 'ibgw_gate_app_messages_in_total{mode="paper",app="trader",client_id="1"} 2' in metrics
    assert 'ibgw_gate_halted{mode="paper"} 0' in metrics
    seen = float(
        next(line for line in metrics.splitlines() if line.startswith("ibgw_gate_app_last_seen")).split()[1]
    )
    assert seen == pytest.approx(trader["last_seen"], abs=0.01)
    assert [a["name"] for a in status["apps"] if not a["connected"]] == [a["name"] for a in APPS[1:]]


def test_one_connection_line_in_the_log(gate, caplog):
    caplog.set_level(logging.INFO, logger="ibgw.gate")

    async def scenario():
        client = await logged_on(await open_raw(gate.port, 1))
        await client.close()

    run(scenario())
    [line] = [r.getMessage() for r in caplog.records if "connected, server version" in r.getMessage()]
    assert line.startswith("app trader client 1 from 127.0.0.1:") and line.endswith("server version 200")


REQUESTS = st.lists(st.sampled_from(["time", "order", "time-millis"]), min_size=1, max_size=12)
CUTS = st.lists(st.integers(1, 1 << 16), max_size=15)


async def _close(client, gate) -> None:
    """Close `client` and wait for the gate to let its client id go."""
    await client.close()
    await until(lambda: not gate.gate.connected)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(REQUESTS, CUTS)
def test_fuzz_any_split_of_requests_is_relayed_exactly(gate, requests, cuts):
    """Requests cut at arbitrary points, orders among them, all arrive in order, each answered once."""

    async def scenario():
        client = await logged_on(await open_raw(gate.port, 1))
        stream, order_ids = b"", []
        for request in requests:
            if request == "order":
                order_ids.append(oid := client.next_valid_id + len(order_ids))
                stream += ibapi_request(
                    client.version,
                    lambda c: c.placeOrder(oid, contract(), order("BUY", 1, "LMT", lmtPrice=1.0)),
                )
            else:
                stream += frame(b"49\x001\x00" if request == "time" else b"105\x00")
        points = sorted({cut % len(stream) for cut in cuts} - {0})
        for start, end in zip([0] + points, points + [len(stream)], strict=True):
            client.writer.write(stream[start:end])
            await client.writer.drain()
        answers = []
        while len(answers) < len(requests):
            msg_id, fields = await client.next()
            if msg_id in (49, 109):
                answers.append("time" if msg_id == 49 else "time-millis")
            elif msg_id == 5 and int(fields[0]) in order_ids and int(fields[0]) not in answers:
                answers.append(int(fields[0]))  # openOrder, once per order
        await _close(client, gate)
        return answers

    answers = run(scenario())
    assert [a if isinstance(a, str) else "order" for a in answers] == requests


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=8), st.booleans())
def test_fuzz_garbage_never_crashes_the_gate(gate, chunks, before_logon):
    """Garbage before or after the logon: the gate drops or relays it, and keeps serving others."""

    async def scenario():
        if before_logon:
            reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
            writer.write(API_PREFIX)
        else:
            client = await logged_on(await open_raw(gate.port, 2))
            writer = client.writer
        for chunk in chunks:
            writer.write(chunk)
        writer.close()
        other = await logged_on(await open_raw(gate.port, 1))
        assert await current_time(other) > 1_600_000_000
        await _close(other, gate)

    run(scenario())
