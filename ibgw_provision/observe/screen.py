"""`ibgw screen` and `ibgw vnc`: the gateway's display, seen from the operator machine over SSH.

Nothing new listens on the host. `screen` runs `xwd` as the gateway's user inside the display's
private /tmp and converts the XWD image to PNG here. `vnc` runs x11vnc for the session only, on a
unix socket in a 0700 directory of that private /tmp, and each viewer's connection is relayed
through its own SSH command.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ..inventory.model import Host, Inventory
from ..provision import layout
from ..provision.remote import AgentError, agent_stream, call_agent, target
from ..provision.transport import SshError, Transport

XWD_VERSION = 7
ZPIXMAP = 2
MSB_FIRST = 1
HEADER = struct.Struct(">25I")
FIELDS = (
    "header_size file_version pixmap_format pixmap_depth width height xoffset byte_order bitmap_unit "
    "bitmap_bit_order bitmap_pad bits_per_pixel bytes_per_line visual_class red_mask green_mask "
    "blue_mask bits_per_rgb colormap_entries ncolors window_width window_height window_x window_y "
    "window_bdrwidth"
).split()


class ScreenError(Exception):
    """A one-line reason the screen could not be read."""


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rgb: bytes  # rows of width * 3 bytes, top to bottom

    def png(self) -> bytes:
        return png(self.width, self.height, self.rgb)


def display(host: Host, mode: str) -> int:
    """The X display of `mode`'s gateway (as render numbers them: :101, :102, ... in gateway order)."""
    return layout.FIRST_DISPLAY + next(i for i, g in enumerate(host.gateways) if g.mode == mode)


def _request(host: Host, mode: str, op: str) -> dict:
    return {"op": op, "unit": layout.xvfb_unit(mode), "display": display(host, mode), "user": layout.USER}


def capture(inv: Inventory, name: str, mode: str, timeout: float = 30) -> Image:
    """The gateway's display, over one SSH command."""
    host = inv.hosts[name]
    with Transport(target(inv, name, accept_new=False), connect_timeout=timeout) as transport:
        result = call_agent(transport, _request(host, mode, "screen") | {"timeout": timeout})
    if "error" in result:
        raise ScreenError(f"{name}: {mode} display: {result['error']}")
    return parse_xwd(zlib.decompress(base64.b64decode(result["xwd"])))


# ---- XWD (what xwd writes) to RGB -----------------------------------------------------------


def parse_xwd(data: bytes) -> Image:
    """A ZPixmap XWD image of 24 or 32 bits per pixel (TrueColor, byte-aligned masks) as RGB."""
    if len(data) < HEADER.size:
        raise ScreenError("not an XWD image: too short")
    h = dict(zip(FIELDS, HEADER.unpack_from(data), strict=True))
    if h["file_version"] != XWD_VERSION or h["header_size"] < HEADER.size:
        raise ScreenError(f"not an XWD image (version {h['file_version']})")
    if h["pixmap_format"] != ZPIXMAP or h["bits_per_pixel"] not in (24, 32):
        raise ScreenError(
            f"unsupported XWD image: format {h['pixmap_format']}, {h['bits_per_pixel']} bits per pixel "
            "(only ZPixmap at 24 or 32)"
        )
    width, height, stride, bpp = h["width"], h["height"], h["bytes_per_line"], h["bits_per_pixel"] // 8
    offsets = [_byte_of(h[f"{c}_mask"], bpp, h["byte_order"]) for c in ("red", "green", "blue")]
    start = h["header_size"] + 12 * h["ncolors"]  # the colormap: 12 bytes per entry
    if stride < width * bpp or len(data) < start + stride * height:
        raise ScreenError(f"truncated XWD image: {width}x{height} needs {start + stride * height} bytes")
    out = bytearray(width * height * 3)
    for y in range(height):
        row = data[start + y * stride : start + y * stride + width * bpp]
        for channel, offset in enumerate(offsets):
            out[y * width * 3 + channel : (y + 1) * width * 3 : 3] = row[offset::bpp]
    return Image(width, height, bytes(out))


def _byte_of(mask: int, bpp: int, byte_order: int) -> int:
    """Which byte of a pixel holds the channel `mask` selects (masks must be whole bytes)."""
    for index in range(bpp):
        if mask == 0xFF << (8 * index):
            return bpp - 1 - index if byte_order == MSB_FIRST else index
    raise ScreenError(f"unsupported XWD colour mask {mask:#x} (only whole bytes)")


# ---- PNG, with the standard library ---------------------------------------------------------


def png(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG of `rgb` (rows of width * 3 bytes)."""
    stride = width * 3
    raw = b"".join(b"\0" + rgb[y * stride : (y + 1) * stride] for y in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + _chunk(b"IDAT", zlib.compress(raw, 6))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


# ---- VNC for the length of a session --------------------------------------------------------


class VncSession:
    """x11vnc on the host while this lives; viewers connect to a port on 127.0.0.1 here."""

    def __init__(self, inv: Inventory, name: str, mode: str, local_port: int, timeout: float = 30):
        self.host = inv.hosts[name]
        self.name, self.mode = name, mode
        self.transport = Transport(target(inv, name, accept_new=False), connect_timeout=timeout)
        self.listener = socket.create_server(("127.0.0.1", local_port))
        self.remote_socket: str | None = None
        self.ended = threading.Event()
        self.error: str | None = None
        self._ready = threading.Event()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def start(self, timeout: float = 30) -> None:
        """Connect and start x11vnc; returns once it listens (ScreenError otherwise)."""
        self.transport.connect()
        threading.Thread(target=self._run_agent, daemon=True).start()
        if not self._ready.wait(timeout) or self.remote_socket is None:
            self.close()
            raise ScreenError(f"{self.name}: {self.mode} display: {self.error or 'x11vnc did not start'}")

    def _run_agent(self) -> None:
        def on_event(message: dict) -> None:
            if "vnc" in message:
                self.remote_socket = message["vnc"]["socket"]
                self._ready.set()

        try:
            result = call_agent(self.transport, _request(self.host, self.mode, "vnc"), on_event)
            self.error = result.get("error") or f"x11vnc exited ({result.get('exit')})"
        except (SshError, AgentError) as exc:
            self.error = str(exc)
        finally:
            self.ended.set()
            self._ready.set()

    def serve(self, on_viewer: Callable[[str], None] = lambda peer: None) -> None:
        """Relay each viewer that connects to the local port, until x11vnc or the session ends."""
        self.listener.settimeout(0.5)
        while not self.ended.is_set():
            try:
                viewer, peer = self.listener.accept()
            except TimeoutError:
                continue
            on_viewer(f"{peer[0]}:{peer[1]}")
            threading.Thread(target=self._relay, args=(viewer,), daemon=True).start()

    def _relay(self, viewer: socket.socket) -> None:
        try:
            remote = agent_stream(self.transport, {"op": "relay", "socket": self.remote_socket})
        except SshError:
            viewer.close()
            return
        _join(viewer, remote)

    def close(self) -> None:
        """Closing the SSH connection ends the host's side: its heartbeat fails and x11vnc stops."""
        self.listener.close()
        self.transport.close()


def _join(a: socket.socket, b: socket.socket) -> None:
    def copy(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    other = threading.Thread(target=copy, args=(b, a), daemon=True)
    other.start()
    copy(a, b)
    other.join(5)
    a.close()
    b.close()
