"""Health probe: log on to a TWS API port like a client would, time a round trip, log off.

Offers versions up to 200 so everything stays text: the probe needs no protobuf and no ibapi.
The whole probe, connecting and closing included, runs within one timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import sys
from dataclasses import dataclass

from . import versions
from .codec import decode, encode_text
from .codes import Code, is_notice
from .errors import ProtocolError
from .fields import FieldReader
from .framing import MAX_HELLO, Hello, parse_server_hello, read_frame
from .messages import In, Out

if sys.version_info >= (3, 11):
    from asyncio import timeout as aio_timeout
else:  # Python 3.10 (Ubuntu 22.04's): the same context manager from async-timeout
    from async_timeout import timeout as aio_timeout

PROBE_MAX_VERSION = versions.PROTOBUF - 1
START_API_VERSION = 2
CONNECT_FAIL = Code.CONNECT_FAIL  # the code ibapi reports when it cannot connect


@dataclass(frozen=True)
class ProbeResult:
    server_version: int
    connection_time: str
    client_id: int
    next_valid_id: int
    accounts: tuple[str, ...]
    server_time: int  # epoch seconds, from reqCurrentTime
    round_trip: float  # seconds from reqCurrentTime to its answer
    notices: tuple[tuple[int, str], ...]  # (code, message) of informational errors seen


class ProbeError(Exception):
    """The probe failed; `code` is the TWS error code when the server sent one (e.g. 326), or 502
    when the connection could not be made."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def parse_error(version: int, fields: list[str]) -> tuple[int, int, str]:
    """(request id, code, message) of an ERR_MSG text body."""
    reader = FieldReader(fields)
    if version < versions.ERROR_TIME:
        reader.skip()  # message version
    return reader.int(), reader.int(), reader.str()


class _Inbox:
    """Reads messages, keeping notices and turning real errors into ProbeError."""

    def __init__(self, reader: asyncio.StreamReader, version: int):
        self.reader, self.version = reader, version
        self.notices: list[tuple[int, str]] = []

    async def next(self) -> tuple[int, FieldReader]:
        while True:
            try:
                message = decode(self.version, await read_frame(self.reader))
            except asyncio.IncompleteReadError:
                raise ProbeError("server closed the connection") from None
            if message.protobuf:
                raise ProbeError(f"unexpected protobuf message {message.msg_id} at version {self.version}")
            if message.msg_id != In.ERR_MSG:
                return message.msg_id, FieldReader(message.fields())
            req_id, code, text = parse_error(self.version, message.fields())
            if req_id != -1 or not is_notice(code):
                raise ProbeError(f"error {code}: {text}", code)
            self.notices.append((code, text))


async def _handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, str]:
    writer.write(Hello(versions.MIN_CLIENT, PROBE_MAX_VERSION).encode())
    try:
        version, connection_time = parse_server_hello(await read_frame(reader, MAX_HELLO))
    except asyncio.IncompleteReadError:
        raise ProbeError("server closed the connection during the handshake", CONNECT_FAIL) from None
    if not versions.MIN_CLIENT <= version <= PROBE_MAX_VERSION:
        raise ProbeError(
            f"server chose version {version}, outside the offered v{versions.MIN_CLIENT}..{PROBE_MAX_VERSION}"
        )
    return version, connection_time


async def _log_on(inbox: _Inbox) -> tuple[int, tuple[str, ...]]:
    next_id, accounts = None, None
    while next_id is None or accounts is None:
        msg_id, reader = await inbox.next()
        if msg_id == In.NEXT_VALID_ID:
            reader.skip()
            next_id = reader.int()
        elif msg_id == In.MANAGED_ACCTS:
            reader.skip()
            accounts = tuple(a for a in reader.str().split(",") if a)
    return next_id, accounts


async def _current_time(inbox: _Inbox, writer: asyncio.StreamWriter) -> tuple[int, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    writer.write(encode_text(inbox.version, Out.REQ_CURRENT_TIME, (1,)))
    while True:
        msg_id, reader = await inbox.next()
        if msg_id == In.CURRENT_TIME:
            reader.skip()
            return reader.int(), loop.time() - started


async def _connect(
    host: str, port: int, source: str | None, sock: socket.socket | None, tls: ssl.SSLContext | None = None
):
    if sock is None:
        local = (source, 0) if source else None
        if tls is not None:  # a front with front.tls: TLS first, with the probe's client certificate
            return await asyncio.open_connection(host, port, local_addr=local, ssl=tls, server_hostname=host)
        return await asyncio.open_connection(host, port, local_addr=local)
    try:  # a forward (through SSH): TLS, when the front has it, runs over the forwarded stream
        if tls is not None:
            return await asyncio.open_connection(sock=sock, ssl=tls, server_hostname=host)
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def _probe(
    host: str,
    port: int,
    client_id: int,
    source: str | None,
    sock: socket.socket | None,
    tls: ssl.SSLContext | None = None,
) -> ProbeResult:
    reader, writer = await _connect(host, port, source, sock, tls)
    try:
        version, connection_time = await _handshake(reader, writer)
        writer.write(encode_text(version, Out.START_API, (START_API_VERSION, client_id, "")))
        inbox = _Inbox(reader, version)
        next_id, accounts = await _log_on(inbox)
        server_time, round_trip = await _current_time(inbox, writer)
        return ProbeResult(
            version,
            connection_time,
            client_id,
            next_id,
            accounts,
            server_time,
            round_trip,
            tuple(inbox.notices),
        )
    except BaseException:
        writer.transport.abort()  # on failure or timeout: drop at once, no waiting for a flush
        raise
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def probe(
    host: str,
    port: int,
    client_id: int,
    timeout: float = 5.0,
    source: str | None = None,
    sock: socket.socket | None = None,
    tls: ssl.SSLContext | None = None,
) -> ProbeResult:
    """Connect, hand-shake, START_API as `client_id`, time reqCurrentTime, disconnect.

    `source` binds the local address (e.g. a distinct 127.x address); `sock`, an already
    connected socket (e.g. a forward through SSH), is used instead of connecting to host:port
    and is closed afterwards. Every failure, a timeout included, is a ProbeError.
    """
    try:
        async with aio_timeout(timeout):
            return await _probe(host, port, client_id, source, sock, tls)
    except TimeoutError:
        raise ProbeError(f"no complete answer from {host}:{port} within {timeout:g}s") from None
    except ProtocolError as exc:
        raise ProbeError(f"protocol error from {host}:{port}: {exc}") from None
    except ssl.SSLError as exc:
        raise ProbeError(f"TLS with {host}:{port} failed: {exc.reason or exc}", CONNECT_FAIL) from None
    except OSError as exc:
        raise ProbeError(f"connection to {host}:{port} failed: {exc.strerror or exc}", CONNECT_FAIL) from None
