import math
from decimal import Decimal

import pytest
from ibapi import comm
from ibapi.common import getServerVersionForMessage
from ibapi.decoder import Decoder
from ibapi.message import IN, OUT
from ibapi.server_versions import MAX_CLIENT_VER
from ibapi.wrapper import EWrapper

from ibgw_provision.tws import (
    UNSET_DOUBLE,
    FieldReader,
    In,
    MalformedMessage,
    Out,
    decode,
    encode_fields,
    encode_protobuf,
    encode_text,
    split_fields,
    versions,
)


def test_message_ids_match_ibapi():
    assert {m.name: m.value for m in In} == {m.name: m.value for m in IN}
    assert {m.name: m.value for m in Out} == {m.name: m.value for m in OUT}


def test_latest_version_is_ibapis_top():
    assert versions.LATEST == MAX_CLIENT_VER


def test_text_messages_match_ibapi_framing():
    body = comm.make_field(2) + comm.make_field(7) + comm.make_field("")
    assert encode_text(178, Out.START_API, (2, 7, "")) == comm.make_msg(Out.START_API, False, body)
    assert encode_text(205, Out.START_API, (2, 7, "")) == comm.make_msg(Out.START_API, True, body)


def test_protobuf_messages_match_ibapi_framing():
    assert encode_protobuf(Out.REQ_IDS, b"\x08\x01") == comm.make_msg_proto(Out.REQ_IDS + 200, b"\x08\x01")


@pytest.mark.parametrize("version", [178, 200, 201, 226])
def test_decode_reads_back_what_encode_writes(version):
    message = decode(version, encode_text(version, In.NEXT_VALID_ID, (1, 42))[4:])
    assert (message.msg_id, message.protobuf, message.fields()) == (In.NEXT_VALID_ID, False, ["1", "42"])


def test_decode_protobuf_ids():
    message = decode(226, encode_protobuf(In.NEXT_VALID_ID, b"\x08\x2a")[4:])
    assert (message.msg_id, message.protobuf, message.body) == (In.NEXT_VALID_ID, True, b"\x08\x2a")


@pytest.mark.parametrize(
    "version, payload", [(178, b"x\0"), (178, b"12"), (178, b""), (226, b"\0\0"), (178, b"9999999999\0")]
)
def test_decode_rejects_bad_message_ids(version, payload):
    with pytest.raises(MalformedMessage):
        decode(version, payload)


def test_fields_are_written_the_way_the_java_server_writes_them():
    assert encode_fields([True, False, None, 1.5, UNSET_DOUBLE, float("inf"), Decimal("100"), "x"]) == (
        b"1\x000\x00\x001.5\x001.7976931348623157E308\x00Infinite\x00100\x00x\x00"
    )
    assert split_fields(b"a\0\0b\0") == ["a", "", "b"]
    assert split_fields(b"a\0b") == ["a", "b"]


def test_ibapi_reads_unset_doubles_back_as_unset():
    assert float(encode_fields([UNSET_DOUBLE])[:-1]) == UNSET_DOUBLE


def test_field_reader_types_and_errors():
    reader = FieldReader(["7", "", "2.5", "0", "1", "10.5", "tail"])
    assert (reader.int(), reader.int(-1), reader.float(), reader.bool(), reader.bool(), reader.decimal()) == (
        7,
        -1,
        2.5,
        False,
        True,
        Decimal("10.5"),
    )
    assert reader.remaining() == 1
    with pytest.raises(MalformedMessage):
        reader.int()
    with pytest.raises(MalformedMessage):
        reader.str()


# Spellings Python reads and Java's Integer.parseInt / Double.parseDouble or ibapi's 0/1 booleans do not:
# the gate must not read a value where the gateway reads another (or none).
@pytest.mark.parametrize(
    "kind, text",
    [
        ("bool", "true"),
        ("bool", "True"),
        ("bool", " 1"),
        ("bool", "1_0"),
        ("bool", "2"),
        ("bool", "-1"),
        ("int", " 1"),
        ("int", "1_0"),
        ("int", "inf"),
        ("int", "\u0661"),
        ("float", "1_0"),
        ("float", " 1"),
        ("float", "nan "),
        ("float", "\u0661"),
        ("decimal", "1_0"),
        ("decimal", " 1"),
        ("decimal", "NaN"),
        ("decimal", "inf"),
    ],
)
def test_field_reader_refuses_what_java_would_not_read(kind, text):
    with pytest.raises(MalformedMessage):
        getattr(FieldReader([text]), kind)()


def test_field_reader_reads_what_clients_send():
    reader = FieldReader(["-3", "+4", "1e-06", ".5", "Infinity", "Infinite", "inf", "-1.5E3", "600.0"])
    assert [reader.int(), reader.int()] == [-3, 4]
    assert [reader.float() for _ in range(7)] == [1e-06, 0.5, math.inf, math.inf, math.inf, -1500.0, 600.0]


@pytest.mark.parametrize("version", range(versions.MIN_CLIENT, versions.LATEST + 1))
def test_request_protobuf_table_agrees_with_ibapi(version):
    for msg_id in Out:
        assert versions.request_is_protobuf(version, msg_id) == (
            getServerVersionForMessage(msg_id) <= version
        )


def test_every_response_with_a_protobuf_decoder_has_a_switch_version():
    decoder = Decoder(EWrapper(), versions.LATEST)
    assert set(decoder.msgId2handleInfoProtoBuf) == set(versions.PROTOBUF_RESPONSE_SINCE)
    assert all(versions.PROTOBUF <= v <= versions.LATEST for v in versions.PROTOBUF_RESPONSE_SINCE.values())
