"""Length-prefixed framing and the v100+ handshake.

Client: ``API\\0`` then one frame ``v<min>..<max>[ <connect options>]``.
Server: one frame ``<version>\\0<connection time>\\0``. After that every message is a frame:
a 4-byte big-endian length, then the payload (see `codec`).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from .errors import FrameTooLarge, HandshakeError

API_PREFIX = b"API\0"
MAX_FRAME = 0xFFFFFF  # ibapi's MAX_MSG_LEN
MAX_HELLO = 1024
ANY_SIZE = 0xFFFFFFFF  # every length a 4-byte prefix can give
_HEADER = struct.Struct(">I")
_HELLO = re.compile(r"v(\d{1,6})\.\.(\d{1,6})(?: (.*))?", re.S)


def frame(payload: bytes) -> bytes:
    """The payload with its 4-byte big-endian length prefix."""
    return _HEADER.pack(len(payload)) + payload


def frame_spans(
    buffer: bytes | bytearray, pos: int = 0, max_size: int = MAX_FRAME
) -> Iterator[tuple[int, int]]:
    """(start, end) of each frame whose length prefix lies in buffer[pos:]: start at its prefix, end after
    its payload. The last one may end beyond the buffer. FrameTooLarge on a prefix above `max_size`."""
    end = len(buffer)
    while end - pos >= 4:
        (size,) = _HEADER.unpack_from(buffer, pos)
        if size > max_size:
            raise FrameTooLarge(size, max_size)
        yield pos, pos + 4 + size
        pos += 4 + size


def unframe(buffer: bytes, max_size: int = MAX_FRAME) -> tuple[list[bytes], bytes]:
    """Split complete frames off the front of `buffer`; return them and the incomplete rest."""
    frames, pos = [], 0
    for start, end in frame_spans(buffer, 0, max_size):
        if end > len(buffer):
            break
        frames.append(buffer[start + 4 : end])
        pos = end
    return frames, buffer[pos:]


class FrameCounter:
    """Counts the frames in a byte stream fed in arbitrary chunks, keeping no data."""

    def __init__(self) -> None:
        self._owed = 0  # bytes of the current frame still to come
        self._header = b""  # a length prefix split across chunks

    def feed(self, data: bytes) -> int:
        """Frames whose length prefix completes in `data`."""
        frames, pos = 0, self._owed
        if self._header:
            take = 4 - len(self._header)
            header = self._header + data[:take]
            if len(header) < 4:
                self._header = header
                return 0
            self._header = b""
            pos, frames = take + _HEADER.unpack(header)[0], 1
        for _, end in frame_spans(data, pos, ANY_SIZE):
            frames += 1
            pos = end
        if pos < len(data):
            self._header, self._owed = bytes(data[pos:]), 0
        else:
            self._owed = pos - len(data)
        return frames


class ByteReader(Protocol):
    """What frames are read from: an asyncio.StreamReader, or anything with its readexactly."""

    async def readexactly(self, n: int, /) -> bytes: ...


async def read_frame(reader: ByteReader, max_size: int = MAX_FRAME) -> bytes:
    """Read one frame; asyncio.IncompleteReadError at end of stream, FrameTooLarge on a huge prefix."""
    (size,) = _HEADER.unpack(await reader.readexactly(4))
    if size > max_size:
        raise FrameTooLarge(size, max_size)
    return await reader.readexactly(size)


@dataclass(frozen=True)
class Hello:
    """The client's side of the handshake."""

    min_version: int
    max_version: int
    options: str = ""

    def encode(self) -> bytes:
        text = f"v{self.min_version}..{self.max_version}" + (f" {self.options}" if self.options else "")
        return API_PREFIX + frame(text.encode("ascii"))


def parse_hello(payload: bytes) -> Hello:
    """The version range and connect options from the client's first frame: printable ASCII only (the
    options are passed on to the gateway as they are)."""
    if not all(0x20 <= byte <= 0x7E for byte in payload):
        raise HandshakeError(f"hello is not printable ASCII: {payload[:40]!r}")
    match = _HELLO.fullmatch(payload.decode("ascii"))
    if not match:
        raise HandshakeError(f"bad version range {payload[:40]!r}")
    low, high = int(match[1]), int(match[2])
    if low > high:
        raise HandshakeError(f"empty version range v{low}..{high}")
    return Hello(low, high, match[3] or "")


def negotiate(hello: Hello, server_min: int, server_max: int) -> int:
    """The highest version both sides speak."""
    version = min(hello.max_version, server_max)
    if version < max(hello.min_version, server_min):
        raise HandshakeError(
            f"no common version: client v{hello.min_version}..{hello.max_version}, "
            f"server v{server_min}..{server_max}"
        )
    return version


def encode_server_hello(version: int, connection_time: str) -> bytes:
    return frame(f"{version}\0{connection_time}\0".encode("ascii"))


def parse_server_hello(payload: bytes) -> tuple[int, str]:
    """(server version, connection time) from the server's first frame."""
    parts = payload.decode("ascii", "replace").split("\0")
    if len(parts) != 3 or parts[2] or not parts[0].isdigit():
        raise HandshakeError(f"bad server hello {payload[:60]!r}")
    return int(parts[0]), parts[1]
