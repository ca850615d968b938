"""One client connection: handshake, START_API, the request loop, and sending with injected latency."""

from __future__ import annotations

import asyncio
import collections
import logging
import sys
from typing import Protocol

from ..tws import codec
from ..tws.codes import Code
from ..tws.errors import FrameTooLarge, MalformedMessage, ProtocolError
from ..tws.framing import API_PREFIX, MAX_HELLO, encode_server_hello, negotiate, parse_hello, read_frame
from ..tws.messages import Out
from ..tws.requests import StartApi, read_start_api
from . import requests
from .responses import Encoder
from .universe import Instrument

if sys.version_info >= (3, 11):
    from asyncio import timeout as aio_timeout
else:  # Python 3.10 (Ubuntu 22.04's): the same context manager from async-timeout
    from async_timeout import timeout as aio_timeout

log = logging.getLogger("ibgw.sim")

HANDSHAKE_TIMEOUT = 10.0  # for the hello and START_API together
MAX_START_API = 4096  # START_API is a few dozen bytes, text or protobuf
CONGESTED_BYTES = 4 << 20  # skip market data for a client this far behind, as TWS conflates
MAX_PENDING_BYTES = 64 << 20  # drop a client this far behind: it is not reading
CLOSE_TIMEOUT = 5.0


class Host(Protocol):
    """What a session needs of the gateway it belongs to."""

    @property
    def latency(self) -> float: ...

    def versions(self) -> tuple[int, int]:
        """The lowest and highest server version offered."""

    def connection_time(self) -> str: ...

    def admit(self, session: Session, client_id: int) -> bool: ...

    def handle(self, session: Session, msg_id: int, request: object) -> None: ...

    def forget(self, session: Session) -> None: ...


class Session:
    """A connected client. `client_id` is set once START_API has been accepted."""

    def __init__(self, server: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server, self.reader, self.writer = server, reader, writer
        host, port = (writer.get_extra_info("peername") or ("?", 0))[:2]
        self.peer = f"{host}:{port}"
        self.version = 0
        self._encoder: Encoder | None = None
        self.client_id: int | None = None
        self.market_data: dict[int, Instrument] = {}  # streaming reqMktData by request id
        self.positions_subscribed = False
        self.account_updates: str | None = None  # account of an active reqAccountUpdates
        self.account_summaries: dict[int, frozenset[str]] = {}  # reqAccountSummary: request id -> tags
        self.account_multi: dict[int, tuple[str, ...]] = {}  # reqAccountUpdatesMulti: request id -> accounts
        self._delayed: collections.deque[tuple[float, bytes]] = collections.deque()
        self._delayed_bytes = 0
        self._flusher: asyncio.Task | None = None
        self.closed = False

    @property
    def encoder(self) -> Encoder:
        """The encoder for the negotiated version (ProtocolError before the handshake)."""
        if self._encoder is None:
            raise ProtocolError("no version negotiated yet")
        return self._encoder

    @property
    def client(self) -> int:
        """The client id of a logged-on session (ProtocolError before START_API is accepted)."""
        if self.client_id is None:
            raise ProtocolError("not logged on")
        return self.client_id

    # ---- sending ---------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        """Queue bytes for the client, `server.latency` seconds late when latency is injected.

        A client that lets MAX_PENDING_BYTES pile up is dropped, so it cannot grow memory without bound.
        """
        if self.closed or not data:
            return
        if self.pending_bytes + len(data) > MAX_PENDING_BYTES:
            log.warning(
                "client %s (%s): %d bytes unread; dropping it", self.client_id, self.peer, self.pending_bytes
            )
            self.closed = True
            self.writer.transport.abort()
            return
        latency = self.server.latency
        if latency <= 0 and not self._delayed:
            self.writer.write(data)
            return
        self._delayed.append((asyncio.get_running_loop().time() + latency, data))
        self._delayed_bytes += len(data)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_delayed())

    async def _flush_delayed(self) -> None:
        loop = asyncio.get_running_loop()
        while self._delayed and not self.closed:
            due, data = self._delayed[0]
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
                continue
            self._write_first_delayed()

    def _write_first_delayed(self) -> None:
        data = self._delayed.popleft()[1]
        self._delayed_bytes -= len(data)
        self.writer.write(data)

    @property
    def delayed(self) -> int:
        """Messages held back by injected latency."""
        return len(self._delayed)

    @property
    def pending_bytes(self) -> int:
        """Bytes sent but not yet taken by the client: held back by latency or in the socket buffer."""
        return self._delayed_bytes + self.writer.transport.get_write_buffer_size()

    @property
    def congested(self) -> bool:
        return self.pending_bytes > CONGESTED_BYTES

    async def close(self) -> None:
        """Unregister, write out everything already sent (latency-delayed messages at once), close the
        socket."""
        self.server.forget(self)
        if self.closed:
            if not self.writer.transport.is_closing():
                self.writer.transport.abort()
            return
        self.closed = True
        if self._flusher is not None:
            self._flusher.cancel()
        while self._delayed:
            self._write_first_delayed()
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), timeout=CLOSE_TIMEOUT)
        except (OSError, TimeoutError):
            self.writer.transport.abort()

    # ---- lifecycle -------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with aio_timeout(HANDSHAKE_TIMEOUT):
                await self._handshake()
                start = await self._read_start_api()
            if self.server.admit(self, start.client_id):
                await self._serve()
        except (
            ProtocolError,
            asyncio.IncompleteReadError,
            OSError,
        ) as exc:  # OSError covers resets, timeouts
            log.debug("%s: closing: %s", self.peer, exc or type(exc).__name__)
        except Exception:  # a bug must cost one connection, never the gateway
            log.exception("client %s (%s): unexpected error; closing", self.client_id, self.peer)
        finally:
            await self.close()

    async def _handshake(self) -> None:
        if await self.reader.readexactly(len(API_PREFIX)) != API_PREFIX:
            raise ProtocolError("no API prefix")
        hello = parse_hello(await read_frame(self.reader, MAX_HELLO))
        self.version = negotiate(hello, *self.server.versions())
        self._encoder = Encoder(self.version)
        self.send(encode_server_hello(self.version, self.server.connection_time()))

    async def _read_start_api(self) -> StartApi:
        message = codec.decode(self.version, await read_frame(self.reader, MAX_START_API))
        if message.msg_id != Out.START_API:
            raise ProtocolError(f"expected START_API, got message {message.msg_id}")
        return read_start_api(self.version, message)

    async def _serve(self) -> None:
        while not self.closed:
            try:
                payload = await read_frame(self.reader)
            except FrameTooLarge as exc:
                log.warning("client %s: %s; closing", self.client_id, exc)
                return
            self._handle(payload)
            await self.writer.drain()  # a client that does not read its answers is not served more

    def _handle(self, payload: bytes) -> None:
        msg_id = -1
        try:
            message = codec.decode(self.version, payload)
            msg_id = message.msg_id
            request = requests.parse(self.version, message)
        except MalformedMessage as exc:
            self.send(
                self.encoder.error(
                    -1, Code.REQUEST_READ_ERROR, f"Error reading request. Message id {msg_id}. {exc}"
                )
            )
            return
        except requests.UnsupportedRequest as exc:
            self.send(
                self.encoder.error(
                    -1,
                    Code.REQUEST_VALIDATION_ERROR,
                    f"Error validating request.-'{exc.msg_id}' : cause - Unsupported request (ibgw sim)",
                )
            )
            return
        try:
            self.server.handle(self, msg_id, request)
        except Exception:  # a bug in one handler must not take the gateway down
            log.exception("client %s: failed to handle %r", self.client_id, request)
            self.send(
                self.encoder.error(
                    -1, Code.REQUEST_READ_ERROR, f"Error reading request. Message id {msg_id}. Internal error"
                )
            )
