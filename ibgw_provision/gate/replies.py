"""Error messages (id 4) the gate sends a client itself, encoded for the negotiated server version."""

from __future__ import annotations

import time

from ibapi.protobuf.ErrorMessage_pb2 import ErrorMessage

from ..tws import versions
from ..tws.codec import encode_protobuf, encode_text
from ..tws.messages import In

ERROR_VERSION = 2  # the message version field of text errors below ERROR_TIME


def error(version: int, req_id: int, code: int, text: str) -> bytes:
    """A framed ERR_MSG as the gateway would send it at `version` (text, timed text, or protobuf)."""
    millis = int(time.time() * 1000)
    if versions.response_is_protobuf(version, In.ERR_MSG):
        pb = ErrorMessage(id=req_id, errorTime=millis, errorCode=code, errorMsg=text)
        return encode_protobuf(In.ERR_MSG, pb.SerializeToString())
    if version >= versions.ERROR_TIME:
        return encode_text(version, In.ERR_MSG, (req_id, code, text, "", millis))
    advanced = ("",) if version >= versions.ADVANCED_ORDER_REJECT else ()
    return encode_text(version, In.ERR_MSG, (ERROR_VERSION, req_id, code, text, *advanced))
