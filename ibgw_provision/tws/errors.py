"""Errors raised while reading the TWS API wire protocol."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer sent bytes that do not follow the protocol."""


class HandshakeError(ProtocolError):
    """Bad `API\\0` prefix, version range or server hello."""


class FrameTooLarge(ProtocolError):
    """A length prefix above the allowed maximum."""

    def __init__(self, size: int, limit: int):
        super().__init__(f"frame of {size} bytes exceeds {limit}")
        self.size, self.limit = size, limit


class MalformedMessage(ProtocolError):
    """A complete frame whose fields or protobuf payload cannot be read."""
