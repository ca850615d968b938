"""The tunnel: a local listener whose every connection goes on over its own TLS connection to the front.

Each client connection opens a new TLS 1.3 connection with the app's certificate, verifying the
front's certificate against ibgw's app CA and the front's name or address. Nothing is retried
inside a connection: if the front is down, the client's connection is closed, and its next one
tries again. One log line per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ibgw.tunnel")
CHUNK = 256 * 1024
FILES = ("cert.pem", "key.pem", "ca.pem")
IB_PORTS = {"paper": 4002, "live": 4001}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"{text!r} is not HOST:PORT")
        return cls(host.strip("[]"), int(port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def client_context(cert_dir: Path) -> ssl.SSLContext:
    """TLS 1.3 with the app's certificate; the front must present a certificate of ibgw's app CA."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cert_dir / "ca.pem")
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")
    return context


class Tunnel:
    def __init__(self, listen: Endpoint, front: Endpoint, context: ssl.SSLContext, timeout: float = 10.0):
        self.listen, self.front, self.context, self.timeout = listen, front, context, timeout
        self.server: asyncio.Server | None = None
        self.port = listen.port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.listen.host, self.listen.port)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info(
            "listening on %s:%d, carrying each connection over TLS to %s",
            self.listen.host,
            self.port,
            self.front,
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = f"{host}:{port}"
        started = time.monotonic()
        try:
            front_reader, front_writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.front.host,
                    self.front.port,
                    ssl=self.context,
                    server_hostname=self.front.host,
                ),
                self.timeout,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            log.warning("%s: front %s unreachable, connection closed: %s", peer, self.front, exc)
            writer.close()
            return
        handshake = time.monotonic() - started
        (sent, _), (received, error) = await asyncio.gather(
            _pipe(reader, front_writer), _pipe(front_reader, writer)
        )
        if error is not None:  # TLS 1.3: the front checks the app's certificate after the handshake
            log.warning("%s: via %s, front refused the connection: %s", peer, self.front, error)
            return
        log.info(
            "%s: via %s (TLS %.0f ms), %d bytes out, %d bytes in, closed after %.1f s",
            peer,
            self.front,
            handshake * 1000,
            sent,
            received,
            time.monotonic() - started,
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[int, str | None]:
    """Copy until either side ends; then close the writer. (Bytes copied, the TLS alert if any.)"""
    total, error = 0, None
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            total += len(data)
            await writer.drain()
    except ssl.SSLError as exc:
        error = exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
    except OSError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return total, error
