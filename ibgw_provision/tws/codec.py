"""Message payloads after the handshake.

Below server version 201 a payload is NUL-terminated text fields, the first being the message
id. From 201 the payload starts with the id as a 4-byte big-endian integer; an id above 200
means the rest is a protobuf message for id - 200, otherwise the rest is text fields.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import versions
from .errors import MalformedMessage
from .fields import encode_fields, split_fields
from .framing import frame
from .messages import PROTOBUF_MSG_ID

_MSG_ID = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded payload: its message id, and a protobuf or text body (without the id)."""

    msg_id: int
    protobuf: bool
    body: bytes

    def fields(self) -> list[str]:
        return split_fields(self.body)


ID_BYTES = (
    10  # a payload's first ID_BYTES always hold its message id: 4 raw bytes, or up to 9 digits and a NUL
)


def message_id(version: int, payload: bytes) -> tuple[int, bool, int]:
    """(message id, protobuf?, where the body starts) of a payload, or of its first ID_BYTES."""
    if version >= versions.PROTOBUF:
        if len(payload) < 4:
            raise MalformedMessage(f"payload of {len(payload)} bytes has no message id")
        (msg_id,) = _MSG_ID.unpack_from(payload)
        if msg_id > PROTOBUF_MSG_ID:
            return msg_id - PROTOBUF_MSG_ID, True, 4
        return msg_id, False, 4
    head, sep, _ = payload[:ID_BYTES].partition(b"\0")
    if not sep or not head.isdigit():
        raise MalformedMessage(f"bad message id {head[:20]!r}")
    return int(head), False, len(head) + 1


def decode(version: int, payload: bytes) -> Message:
    """The message in one frame's payload, for a connection at `version`."""
    msg_id, protobuf, body = message_id(version, payload)
    return Message(msg_id, protobuf, payload[body:])


def text_payload(version: int, msg_id: int, body: bytes) -> bytes:
    """A text payload: the id as text below version 201, as a raw int from 201."""
    if version >= versions.PROTOBUF:
        return _MSG_ID.pack(msg_id) + body
    return b"%d\0" % msg_id + body


def encode_text(version: int, msg_id: int, values: Iterable[Any]) -> bytes:
    """A framed text message."""
    return frame(text_payload(version, msg_id, encode_fields(values)))


def encode_protobuf(msg_id: int, data: bytes) -> bytes:
    """A framed protobuf message (only valid from version 201)."""
    return frame(_MSG_ID.pack(msg_id + PROTOBUF_MSG_ID) + data)
