"""TLS with a client certificate, between the PROXY header and the TWS API handshake (front.tls).

The front passes bytes (HAProxy mode tcp, nginx stream): it sends its PROXY header in clear,
then the app's TLS bytes follow. The gate terminates TLS itself, over the connection's Link,
with an `ssl.SSLObject` on memory buffers: what the Link read past the PROXY header (often the
start of the ClientHello, in the same segment) simply goes into the TLS engine first.

An app is its certificate: verified against ibgw's app CA and CRL (TLS 1.3 only), and named by
its SAN URI `ibgw:app:NAME`. No certificate, another CA, an expired or a revoked one: the
handshake fails and the connection closes before a byte of TWS API is read.

The CA, CRL, certificate and key are re-read for new connections on SIGHUP (`reload`) or when
one of the files changes; connections already up keep their session.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from ..tws.errors import HandshakeError
from .config import TlsFiles
from .link import Link

log = logging.getLogger("ibgw.gate")
APP_URI = "ibgw:app:"  # the SAN URI that names an app: ibgw:app:NAME
READ_SIZE = 256 * 1024


class FilesError(Exception):
    """The CA, CRL, certificate or key cannot be loaded at start."""


class Refused(HandshakeError):
    """The TLS handshake failed: no, or no valid, client certificate."""


@dataclass(frozen=True)
class Peer:
    """The verified client certificate: the app it names and its serial (hex)."""

    app: str | None
    serial: str
    subject: str


def _stamp(path: Path | None) -> tuple | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class Policy:
    """The server-side SSLContext for new connections, rebuilt when its files change."""

    def __init__(self, files: TlsFiles):
        self.files = files
        self._stamps = self._current_stamps()
        try:
            self.context = build_context(files)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise FilesError(
                f"cannot load the TLS files (CA {files.ca}, key {files.key}, ...): {exc}"
            ) from None

    def _current_stamps(self) -> tuple:
        f = self.files
        return tuple(_stamp(p) for p in (f.ca, f.crl, f.cert, f.key))

    def reload(self, why: str = "SIGHUP") -> bool:
        """Re-read the files; on a problem, keep the current context (logged). True if replaced."""
        stamps = self._current_stamps()
        try:
            context = build_context(self.files)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("TLS files not reloaded (%s), keeping the previous ones: %s", why, exc)
            return False
        self.context, self._stamps = context, stamps
        log.info("TLS: CA, CRL and server certificate reloaded (%s)", why)
        return True

    def current(self) -> ssl.SSLContext:
        """The context for a new connection, reloaded first if a file changed."""
        if self._current_stamps() != self._stamps:
            self.reload("a file changed")
            self._stamps = self._current_stamps()  # a broken file is not retried on every connection
        return self.context


def build_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(files.cert, files.key)
    context.load_verify_locations(cafile=files.ca)
    if files.crl is not None:
        context.load_verify_locations(cafile=files.crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def peer_of(cert: dict) -> Peer:
    """The app a verified certificate names (its SAN URI ibgw:app:NAME), and its serial."""
    uris = [value for kind, value in cert.get("subjectAltName", ()) if kind == "URI"]
    apps = [uri.removeprefix(APP_URI) for uri in uris if uri.startswith(APP_URI)]
    subject = ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
    return Peer(apps[0] if len(apps) == 1 else None, str(cert.get("serialNumber", "")), subject)


class TlsLink(Link):
    """A Link carrying plaintext over `raw`, a Link carrying TLS records.

    It takes over `raw`'s transport (flow control, addresses, closing) and its on_lost.
    """

    def __init__(self, raw: Link, context: ssl.SSLContext):
        super().__init__(buffer_limit=raw._buffer_limit)
        self.raw = raw
        self.transport = raw.transport
        self.on_lost = raw.on_lost
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._in, self._out, server_side=True)
        self._handshaken: asyncio.Future = asyncio.get_running_loop().create_future()
        self._received = False
        raw.on_lost = self._raw_lost

    def _raw_lost(self) -> None:
        if not self._handshaken.done():
            if self._received:
                self._handshaken.set_exception(Refused("closed during the TLS handshake"))
            else:  # a TCP check, or a client gone before it said anything: nothing to audit
                self._handshaken.set_exception(asyncio.IncompleteReadError(b"", 1))
        self.connection_lost(None)

    def _flush(self) -> None:
        pending = self._out.read()
        if pending and not self.transport.is_closing():
            self.transport.write(pending)

    def _records(self, data: bytes) -> None:
        """TLS bytes from the app: advance the handshake, or hand on what they decrypt to."""
        self._received = True
        self._in.write(data)
        if not self._handshaken.done():
            try:
                self.ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except (ssl.SSLError, ValueError) as exc:
                self._flush()  # the alert, so the app learns why
                self._handshaken.set_exception(Refused(f"TLS: {_reason(exc)}"))
                return
            self._flush()
            self._handshaken.set_result(None)
        self._decrypt()

    def _decrypt(self) -> None:
        while not self.lost:
            try:
                chunk = self.ssl.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:
                log.warning("TLS error from %s: %s", self.transport.get_extra_info("peername"), exc)
                self.transport.abort()
                break
            if not chunk:  # close_notify: the app is done
                self.transport.close()
                break
            self.data_received(chunk)
        self._flush()

    async def handshake(self) -> Peer:
        self.raw.relay(self._records)
        await self._handshaken
        cert = self.ssl.getpeercert()
        assert cert  # CERT_REQUIRED: a finished handshake has a verified certificate
        return peer_of(cert)

    def write(self, data) -> None:
        if not self.transport.is_closing():
            self.ssl.write(data)
            self._flush()


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc)


async def accept(raw: Link, policy: Policy) -> tuple[TlsLink, Peer]:
    """The server side of the TLS handshake on `raw`: the plaintext link and the verified peer.

    Refused (a HandshakeError) when the app has no valid certificate."""
    link = TlsLink(raw, policy.current())
    return link, await link.handshake()


def certificate_refusal(app_name: str, client_id: int, peer: Peer | None) -> str | None:
    """Why a connection presenting `peer`'s certificate may not log on as `app_name`'s client id."""
    if peer is None:
        return None
    if peer.app is None:
        return f"the certificate (serial {peer.serial}) names no app (SAN URI {APP_URI}NAME)"
    if peer.app != app_name:
        return (
            f"client id {client_id} belongs to app {app_name}; this connection's certificate is "
            f"app {peer.app}'s"
        )
    return None
