import asyncio

import pytest
from ibapi import comm

from ibgw_provision.tws import (
    API_PREFIX,
    FrameTooLarge,
    HandshakeError,
    Hello,
    encode_server_hello,
    frame,
    negotiate,
    parse_hello,
    parse_server_hello,
    read_frame,
    unframe,
)


def test_frame_matches_ibapi_length_prefix():
    assert frame(b"v100..226") == comm.make_initial_msg("v100..226")


def test_unframe_splits_complete_frames_and_keeps_the_rest():
    data = frame(b"one") + frame(b"") + frame(b"three")
    frames, rest = unframe(data + data[:6])
    assert frames == [b"one", b"", b"three"]
    assert rest == data[:6]


def test_unframe_rejects_an_oversized_length():
    with pytest.raises(FrameTooLarge):
        unframe(b"\xff\xff\xff\xff", max_size=1000)


def test_hello_round_trip_with_connect_options():
    hello = Hello(100, 226, "+PACEAPI")
    data = hello.encode()
    assert data.startswith(API_PREFIX)
    assert parse_hello(unframe(data[len(API_PREFIX) :])[0][0]) == hello


def test_hello_is_what_ibapi_sends():
    sent = str.encode("API\0", "ascii") + comm.make_initial_msg("v100..226")
    assert parse_hello(sent[8:]) == Hello(100, 226, "")


@pytest.mark.parametrize(
    "payload",
    [b"", b"v100", b"100..200", b"v200..100", b"v1..2\0", b"vx..y", b"v1..2 +PACEAPI\xff", b"v1..2 a\nb"],
)
def test_bad_version_ranges_are_refused(payload):
    with pytest.raises(HandshakeError):
        parse_hello(payload)


def test_negotiate_picks_the_highest_common_version():
    assert negotiate(Hello(157, 178), 157, 226) == 178
    assert negotiate(Hello(100, 226), 157, 200) == 200
    with pytest.raises(HandshakeError):
        negotiate(Hello(100, 150), 157, 226)


def test_server_hello_round_trip():
    version, when = parse_server_hello(encode_server_hello(226, "20250117 09:30:00 EST")[4:])
    assert (version, when) == (226, "20250117 09:30:00 EST")
    with pytest.raises(HandshakeError):
        parse_server_hello(b"226\0")


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_read_frame_reads_one_frame_at_a_time():
    async def scenario():
        reader = _reader(frame(b"a") + frame(b"bc"))
        return await read_frame(reader), await read_frame(reader)

    assert asyncio.run(scenario()) == (b"a", b"bc")


def test_read_frame_refuses_an_oversized_length_and_reports_truncation():
    async def oversized():
        await read_frame(_reader(b"\x01\x00\x00\x00"), max_size=1024)

    async def truncated():
        await read_frame(_reader(frame(b"abcdef")[:7]))

    with pytest.raises(FrameTooLarge):
        asyncio.run(oversized())
    with pytest.raises(asyncio.IncompleteReadError):
        asyncio.run(truncated())
