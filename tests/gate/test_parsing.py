"""What the gate reads off the wire: order requests as ibapi encodes them, PROXY headers, frame
counts, and the errors it writes, checked against the clients' own decoders; fuzzed for crashes."""

import asyncio
import ipaddress
import struct
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ibapi.order_cancel import OrderCancel

from ibgw_provision.gate import orders, proxy
from ibgw_provision.tws import decode, frame, replies, versions
from ibgw_provision.tws.codec import message_id
from ibgw_provision.tws.errors import HandshakeError, MalformedMessage
from ibgw_provision.tws.framing import FrameCounter
from ibgw_provision.tws.messages import Out

from ..kit.gate import proxy_v1, proxy_v2
from ..kit.sim import contract, ib_async_decode, ibapi_client, ibapi_decode, ibapi_request, order

VERSIONS = [
    157,
    versions.ORDER_CONTAINER - 1,
    178,
    versions.CME_TAGGING_FIELDS - 1,
    200,
    versions.PROTOBUF,
    versions.PROTOBUF_PLACE_ORDER,
    versions.PROTOBUF_REST_MESSAGES_1,
    versions.LATEST,
]
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def read(version: int, call) -> orders.OrderRequest:
    message = decode(version, ibapi_request(version, call)[4:])
    assert message.msg_id in orders.ORDER_REQUESTS
    return orders.read_order(version, message)


@pytest.mark.parametrize("version", VERSIONS)
def test_order_requests_as_ibapi_sends_them(version):
    placed = read(
        version, lambda c: c.placeOrder(42, contract(), order("SELL", "2.5", "LMT", lmtPrice=601.25))
    )
    assert placed.client_id == (0 if version >= versions.PROTOBUF_PLACE_ORDER else None)  # ibapi's default
    assert replace(placed, client_id=None) == orders.OrderRequest(
        "placeOrder", 42, "SPY", "STK", "SELL", Decimal("2.5"), "LMT", 601.25
    )
    market = read(
        version,
        lambda c: c.placeOrder(43, contract(sec_type="OPT", strike=600.0, right="C"), order("BUY", 1, "MKT")),
    )
    assert (market.sec_type, market.quantity, market.limit_price) == ("OPT", 1, None)
    assert read(version, lambda c: c.cancelOrder(44, OrderCancel())) == orders.OrderRequest("cancelOrder", 44)
    assert read(version, lambda c: c.reqGlobalCancel(OrderCancel())) == orders.OrderRequest("reqGlobalCancel")
    exercise = read(
        version,
        lambda c: c.exerciseOptions(
            45, contract(sec_type="OPT", strike=600.0, right="P"), 1, 3, "DU1234567", 0, "", "", False
        ),
    )
    assert exercise == orders.OrderRequest("exerciseOptions", 45, "SPY", "OPT", "EXERCISE", Decimal(3))


@pytest.mark.parametrize("version", VERSIONS)
def test_start_api_client_id(version):
    client = ibapi_client(version, client_id=12345)
    client.startApi()
    assert orders.client_id(version, decode(version, client.conn.frames[-1][4:])) == 12345


@pytest.mark.parametrize("version", [157, 178, 193, 194, 200, versions.PROTOBUF, versions.LATEST])
def test_refusals_decode_in_both_clients(version):
    data = replies.error(version, 7, 321, "refused by ibgw gate: app x is read-only")
    [(name, args)] = ibapi_decode(version, data)
    assert name == "error" and (args[0], args[2], args[3]) == (
        7,
        321,
        "refused by ibgw gate: app x is read-only",
    )
    if version <= 178:  # ib_async speaks up to 178, text only
        assert ib_async_decode(version, data) == [
            ("error", (7, 321, "refused by ibgw gate: app x is read-only", ""))
        ]


@pytest.mark.parametrize(
    "header, source",
    [
        (proxy_v1("10.0.1.5"), (ipaddress.ip_address("10.0.1.5"), 40000)),
        (proxy_v1("2001:db8::7"), (ipaddress.ip_address("2001:db8::7"), 40000)),
        (b"PROXY UNKNOWN\r\n", None),
        (proxy_v2("10.0.1.5", 1234), (ipaddress.ip_address("10.0.1.5"), 1234)),
        (proxy_v2("2001:db8::7"), (ipaddress.ip_address("2001:db8::7"), 40000)),
        (proxy_v2("10.0.1.5", command=0), None),  # LOCAL: a health check
        # A front listening on :: names an IPv4 app by its mapped address: the allowlists name IPv4.
        (proxy_v1("::ffff:10.0.1.5"), (ipaddress.ip_address("10.0.1.5"), 40000)),
        (proxy_v2("::ffff:10.0.1.5"), (ipaddress.ip_address("10.0.1.5"), 40000)),
    ],
)
def test_proxy_headers(header, source):
    if header.startswith(b"PROXY"):
        assert proxy.parse_v1(header) == source
    else:
        assert proxy.parse_v2(header[:16], header[16 : 16 + proxy.v2_length(header[:16])]) == source


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 10.0.1.5\r\n",
        b"PROXY TCP4 ::1 ::1 1 2\r\n",
        b"PROXY TCP4 10.0.1.5 127.0.0.1 70000 1\r\n",
        b"PROXY TCP9 a b 1 2\r\n",
    ],
)
def test_bad_proxy_v1_headers(header):
    with pytest.raises(HandshakeError):
        proxy.parse_v1(header)


def test_bad_proxy_v2_headers():
    good = proxy_v2("10.0.1.5")
    with pytest.raises(HandshakeError):
        proxy.v2_length(b"x" + good[1:16])  # signature
    with pytest.raises(HandshakeError):
        proxy.v2_length(good[:12] + b"\x31" + good[13:16])  # version 3
    with pytest.raises(HandshakeError):
        proxy.parse_v2(good[:16], good[16:20])  # address block cut short


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=30), st.data())
def test_frame_counter_counts_frames_however_they_are_split(payloads, data):
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    counter, counted = FrameCounter(), 0
    for start, end in zip([0] + cuts, cuts + [len(stream)], strict=True):
        counted += counter.feed(stream[start:end])
    assert counted == len(payloads)


@FUZZ
@given(st.sampled_from(VERSIONS), st.binary(max_size=40))
def test_message_id_agrees_with_decode(version, payload):
    try:
        message = decode(version, payload)
    except MalformedMessage:
        with pytest.raises(MalformedMessage):
            message_id(version, payload[:20])
        return
    assert message_id(version, payload[:20])[:2] == (message.msg_id, message.protobuf)


@FUZZ
@given(
    st.sampled_from(VERSIONS),
    st.sampled_from(list(orders.ORDER_REQUESTS) + [Out.START_API]),
    st.booleans(),
    st.one_of(
        st.binary(max_size=200),
        st.lists(st.text(max_size=12), max_size=40).map(
            lambda fields: "".join(f + "\0" for f in fields).encode("utf-8", "replace")
        ),
    ),
)
def test_request_readers_never_crash(version, msg_id, as_protobuf, body):
    payload = (
        struct.pack(">I", msg_id + (200 if as_protobuf else 0)) + body
        if version >= versions.PROTOBUF
        else b"%d\0" % msg_id + body
    )
    message = decode(version, payload)
    try:
        if msg_id == Out.START_API:
            assert isinstance(orders.client_id(version, message), int)
        else:
            request = orders.read_order(version, message)
            assert request.quantity is None or request.quantity.is_finite()
    except MalformedMessage:
        pass


@FUZZ
@given(
    st.sampled_from([b"", b"PROXY ", proxy.V2_SIGNATURE, proxy.V2_SIGNATURE + b"\x21\x11"]),
    st.binary(max_size=120),
)
def test_proxy_header_reader_never_crashes(start, data):
    async def read():
        reader = asyncio.StreamReader()
        reader.feed_data(start + data)
        reader.feed_eof()
        try:
            source = await proxy.read_source(reader)
        except (HandshakeError, asyncio.IncompleteReadError):
            return
        assert source is None or 0 <= source[1] <= 65535

    asyncio.run(read())
