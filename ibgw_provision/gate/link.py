"""One socket of a relayed connection.

While the connection hand-shakes, a Link buffers what it receives and serves `readexactly`
(so `tws.framing.read_frame` reads from it). Once `relay(sink)` is called, every chunk goes
straight to `sink` as received: no buffering, no copy.
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
from collections.abc import Callable
from typing import cast


class Link(asyncio.Protocol):
    transport: asyncio.Transport  # set once connected, before anything else uses the link

    def __init__(self, on_made: Callable[[Link], None] | None = None, buffer_limit: int = 1 << 20):
        self.on_made = on_made
        self.on_lost: Callable[[], None] = lambda: None
        self.on_pause: Callable[[], None] = lambda: None  # our outgoing buffer is full: stop feeding us
        self.on_resume: Callable[[], None] = lambda: None
        self.lost = False
        self._buffer = bytearray()
        self._buffer_limit = buffer_limit
        self._waiter: asyncio.Future | None = None
        self._sink: Callable[[bytes], None] | None = None
        self._holds: set[str] = set()
        self.sent = 0  # bytes handed to write() so far

    # ---- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        if self._sink is not None:
            self._sink(data)
            return
        self._buffer += data
        if len(self._buffer) > self._buffer_limit:
            self.hold("buffer")
        self._wake()

    def eof_received(self) -> None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()
        self.on_lost()

    def pause_writing(self) -> None:
        self.on_pause()

    def resume_writing(self) -> None:
        self.on_resume()

    # ---- hand-shaking ----------------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def readexactly(self, size: int) -> bytes:
        """`size` bytes, like StreamReader.readexactly (IncompleteReadError once the peer is gone)."""
        while len(self._buffer) < size:
            if self.lost:
                raise asyncio.IncompleteReadError(bytes(self._buffer), size)
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        if len(self._buffer) <= self._buffer_limit:
            self.release("buffer")
        return data

    def relay(self, sink: Callable[[bytes], None]) -> None:
        """From now on hand every received chunk to `sink`, starting with what is buffered."""
        self._sink = sink
        self.release("buffer")
        if self._buffer:
            pending, self._buffer = bytes(self._buffer), bytearray()
            sink(pending)

    # ---- sending and flow control ----------------------------------------------------------

    def write(self, data) -> None:
        if not self.transport.is_closing():
            self.transport.write(data)
            self.sent += len(data)

    def delivered(self, mark: int) -> bool:
        """Whether the peer has acknowledged the first `mark` bytes written: neither our buffer
        nor the kernel's send queue (unsent or unacknowledged bytes) holds any of them."""
        return self.sent - self.queued - self._kernel_queued() >= mark

    def _kernel_queued(self) -> int:
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            return 0

    @property
    def queued(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return self.transport.get_write_buffer_size()

    def hold(self, reason: str) -> None:
        """Stop reading from the peer until every reason is released."""
        if not self._holds and not self.transport.is_closing():
            self.transport.pause_reading()
        self._holds.add(reason)

    def release(self, reason: str) -> None:
        if reason in self._holds:
            self._holds.discard(reason)
            if not self._holds and not self.transport.is_closing():
                self.transport.resume_reading()

    def close(self, abort: bool = False) -> None:
        """Close after flushing what is queued, or at once (`abort`)."""
        if abort:
            self.transport.abort()
        else:
            self.transport.close()
