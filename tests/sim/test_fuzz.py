"""Random bytes, random frames and truncated frames never take the simulator down."""

import asyncio
import itertools
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ibgw_provision.tws import API_PREFIX, Hello, Out, frame
from ibgw_provision.tws.probe import probe

from ..kit.sim import STEP, RawClient

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CLIENT_IDS = itertools.count(1000)  # a fresh id per connection: the last one may not be released yet


async def _throw(port: int, data: bytes) -> None:
    """Send `data` on a fresh connection, half-close, and read whatever comes back until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    try:
        async with asyncio.timeout(STEP):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    writer.close()


def _still_serving(port: int) -> None:
    assert asyncio.run(probe("127.0.0.1", port, client_id=77, timeout=STEP)).accounts == ("DU1234567",)


def test_random_bytes_instead_of_a_handshake(sim):
    @FUZZ
    @given(data=st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: API_PREFIX + b))
    def check(data):
        asyncio.run(_throw(sim.port, data))

    check()
    _still_serving(sim.port)


def test_random_and_truncated_frames_after_logon(sim):
    lengths = st.integers(0, 2**32 - 1).map(lambda n: struct.pack(">I", n))
    frames = st.lists(
        st.binary(max_size=200).map(frame)
        | st.binary(max_size=60).map(lambda b: frame(b)[:-1] or b)
        | lengths,
        max_size=8,
    )

    @FUZZ
    @given(version=st.sampled_from([178, 200, 226]), payloads=frames)
    def check(version, payloads):
        async def scenario():
            client = await RawClient.connect(sim.port, next(CLIENT_IDS), max_version=version)
            client.writer.write(b"".join(payloads))
            await client.close()

        asyncio.run(scenario())

    check()
    _still_serving(sim.port)


def test_garbled_requests_keep_the_connection_alive(sim):
    @FUZZ
    @given(msg_id=st.sampled_from(list(Out)), fields=st.lists(st.text(max_size=12), max_size=40))
    def check(msg_id, fields):
        async def scenario():
            client = await RawClient.connect(sim.port, next(CLIENT_IDS))
            client.send(msg_id, *fields)
            client.send(Out.REQ_CURRENT_TIME, 1)
            assert int((await client.expect(49))[1]) > 0
            await client.close()

        asyncio.run(scenario())

    check()
    _still_serving(sim.port)


def test_an_oversized_length_gets_a_close(sim):
    async def scenario():
        client = await RawClient.connect(sim.port, client_id=8)
        client.writer.write(struct.pack(">I", 2**31))
        await client.read_until_closed()

    asyncio.run(scenario())
    _still_serving(sim.port)


def test_version_ranges_that_do_not_overlap_get_a_close(sim):
    async def scenario():
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        writer.write(Hello(100, 150).encode())  # no half-close: the server must hang up by itself
        async with asyncio.timeout(STEP):
            assert await reader.read() == b""  # no server hello, then end of stream
        writer.close()

    asyncio.run(scenario())
    _still_serving(sim.port)
