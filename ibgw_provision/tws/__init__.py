"""The TWS API socket protocol: framing, handshake, text fields, message ids, versions.

Independent of any client library, so the simulator, the gate relay and the health probe
share one implementation.
"""

from .codec import Message, decode, encode_protobuf, encode_text, text_payload
from .errors import FrameTooLarge, HandshakeError, MalformedMessage, ProtocolError
from .fields import UNSET_DOUBLE, UNSET_INTEGER, FieldReader, encode_fields, split_fields
from .framing import (
    API_PREFIX,
    MAX_FRAME,
    Hello,
    encode_server_hello,
    frame,
    negotiate,
    parse_hello,
    parse_server_hello,
    read_frame,
    unframe,
)
from .messages import PROTOBUF_MSG_ID, In, Out

__all__ = [
    "API_PREFIX",
    "MAX_FRAME",
    "PROTOBUF_MSG_ID",
    "UNSET_DOUBLE",
    "UNSET_INTEGER",
    "FieldReader",
    "FrameTooLarge",
    "HandshakeError",
    "Hello",
    "In",
    "MalformedMessage",
    "Message",
    "Out",
    "ProtocolError",
    "decode",
    "encode_fields",
    "encode_protobuf",
    "encode_server_hello",
    "encode_text",
    "frame",
    "negotiate",
    "parse_hello",
    "parse_server_hello",
    "read_frame",
    "split_fields",
    "text_payload",
    "unframe",
]
