"""PROXY protocol v1 (text) and v2 (binary) headers, as HAProxy's send-proxy / send-proxy-v2 write them.

Only the source address matters to the gate. LOCAL (v2) and UNKNOWN (v1) headers carry none:
the TCP peer stays the source, as the protocol's specification asks.
"""

from __future__ import annotations

import ipaddress
import struct

from ..tws.errors import HandshakeError
from .config import IPAddress

V1_PREFIX = b"PROXY"
V1_MAX = 107  # the longest v1 line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_HEADER = struct.Struct(">12sBBH")  # signature, version|command, family|transport, address length
_V2_FAMILIES = {0x1: (4, struct.Struct(">4s4sHH")), 0x2: (6, struct.Struct(">16s16sHH"))}
Source = tuple[IPAddress, int]


def unmapped(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 source (a front listening on `::`) as the IPv4 address the allowlists name."""
    return (address.ipv4_mapped or address) if isinstance(address, ipaddress.IPv6Address) else address


def parse_v1(line: bytes) -> Source | None:
    """The source of a v1 line ('PROXY TCP4 src dst sport dport\\r\\n'); None for UNKNOWN."""
    words = line.decode("ascii", "replace").removesuffix("\r\n").split(" ")
    if len(words) >= 2 and words[:2] == ["PROXY", "UNKNOWN"]:
        return None
    if len(words) != 6 or words[0] != "PROXY" or words[1] not in ("TCP4", "TCP6"):
        raise HandshakeError(f"bad PROXY v1 header {line[:V1_MAX]!r}")
    try:
        source = ipaddress.ip_address(words[2])
        port = int(words[4])
    except ValueError:
        raise HandshakeError(f"bad PROXY v1 address in {line[:V1_MAX]!r}") from None
    if source.version != (4 if words[1] == "TCP4" else 6) or not 0 <= port <= 65535:
        raise HandshakeError(f"bad PROXY v1 address in {line[:V1_MAX]!r}")
    return unmapped(source), port


def v2_length(header: bytes) -> int:
    """Bytes that follow the 16-byte v2 header (addresses and TLVs)."""
    signature, version_command, _, length = _V2_HEADER.unpack(header)
    if signature != V2_SIGNATURE or version_command >> 4 != 2 or version_command & 0xF > 1:
        raise HandshakeError(f"bad PROXY v2 header {header!r}")
    return length


def parse_v2(header: bytes, body: bytes) -> Source | None:
    """The source of a v2 header and its address block; None for LOCAL or a non-IP family."""
    _, version_command, family_transport, _ = _V2_HEADER.unpack(header)
    if version_command & 0xF == 0 or family_transport >> 4 not in _V2_FAMILIES:
        return None  # LOCAL (health checks), UNSPEC or UNIX
    ip_version, layout = _V2_FAMILIES[family_transport >> 4]
    if len(body) < layout.size:
        raise HandshakeError(f"PROXY v2 address block of {len(body)} bytes is too short")
    source, _, port, _ = layout.unpack_from(body)
    address = ipaddress.IPv4Address(source) if ip_version == 4 else ipaddress.IPv6Address(source)
    return unmapped(address), port


async def read_source(reader) -> Source | None:
    """Read a v1 or v2 header from `reader` (readexactly); the source it names, if any."""
    start = await reader.readexactly(len(V1_PREFIX))
    if start == V1_PREFIX:
        line = start
        while not line.endswith(b"\r\n"):
            if len(line) >= V1_MAX:
                raise HandshakeError("PROXY v1 header too long")
            line += await reader.readexactly(1)
        return parse_v1(line)
    if start != V2_SIGNATURE[: len(start)]:
        raise HandshakeError(f"expected a PROXY protocol header, got {start!r}")
    header = start + await reader.readexactly(_V2_HEADER.size - len(start))
    return parse_v2(header, await reader.readexactly(v2_length(header)))
