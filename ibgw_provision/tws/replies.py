"""Messages a server side (the simulator, or the gate refusing a request) writes itself."""

from __future__ import annotations

import time

from ibapi.protobuf.ErrorMessage_pb2 import ErrorMessage

from . import versions
from .codec import encode_protobuf, encode_text
from .messages import In

ERROR_VERSION = 2  # the message version field of text errors below ERROR_TIME


def error(version: int, req_id: int, code: int, text: str, advanced_json: str = "") -> bytes:
    """A framed ERR_MSG as the gateway sends it at `version`: versioned text, timed text, or protobuf."""
    millis = int(time.time() * 1000)
    if versions.response_is_protobuf(version, In.ERR_MSG):
        pb = ErrorMessage(id=req_id, errorTime=millis, errorCode=int(code), errorMsg=text)
        if advanced_json:
            pb.advancedOrderRejectJson = advanced_json
        return encode_protobuf(In.ERR_MSG, pb.SerializeToString())
    if version >= versions.ERROR_TIME:
        return encode_text(version, In.ERR_MSG, (req_id, int(code), text, advanced_json, millis))
    advanced = (advanced_json,) if version >= versions.ADVANCED_ORDER_REJECT else ()
    return encode_text(version, In.ERR_MSG, (ERROR_VERSION, req_id, int(code), text, *advanced))
