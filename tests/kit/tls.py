"""Test helpers for front.tls: an app CA, a recording TCP proxy, HAProxy and `ibgw tunnel` as processes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import time

from ibgw_provision.pki.ca import Pki

from .sim import STEP, LoggedProcess, LoopThread

TUNNEL = [sys.executable, "-m", "ibgw_provision", "tunnel"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_pki(directory, apps: list[str]) -> Pki:
    """An app CA with the front's certificate (host 'front', 127.0.0.1) and a certificate per app."""
    pki = Pki(directory)
    pki.init("test")
    pki.issue_server("front", "127.0.0.1")
    for app in apps:
        pki.issue_app(app)
    return pki


def tls_files(pki: Pki) -> dict:
    server = pki.server_dir("front")
    return {
        "ca": str(pki.ca_cert),
        "crl": str(pki.crl),
        "cert": str(server / "cert.pem"),
        "key": str(server / "key.pem"),
    }


class Recorder(LoopThread):
    """A TCP relay on 127.0.0.1 to `target` that counts connections and records the bytes each way."""

    def __init__(self, target: int):
        super().__init__("ibgw.test.recorder")
        self.target = target
        self.connections = 0
        self.upstream: list[bytes] = []  # what each connection's client sent, in order of arrival
        self.downstream = bytearray()
        self.server = self.call(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]

    def sent(self) -> bytes:
        return b"".join(self.upstream)

    async def _serve(self, reader, writer) -> None:
        self.connections += 1
        index = len(self.upstream)
        self.upstream.append(b"")
        try:
            target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pipe(src, dst, record) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    record(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        def up(data: bytes) -> None:
            self.upstream[index] += data

        await asyncio.gather(
            pipe(reader, target_writer, up), pipe(target_reader, writer, self.downstream.extend)
        )

    async def _shutdown(self) -> None:
        self.server.close()

    def stop(self) -> None:
        self.close(self._shutdown(), "recorder")


class Haproxy:
    """`haproxy -db -f cfg`: mode tcp on 127.0.0.1:`port`, to the gate's front socket, PROXY v2."""

    def __init__(self, front_socket, port: int | None = None):
        self.port = port or free_port()
        self.cfg = tempfile.NamedTemporaryFile("w", suffix=".cfg")
        self.cfg.write(
            "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1m\n    timeout server 1m\n"
            f"listen front\n    bind 127.0.0.1:{self.port}\n"
            f"    server gate unix@{front_socket} send-proxy-v2\n"
        )
        self.cfg.flush()
        self.proc = subprocess.Popen(
            ["haproxy", "-db", "-f", self.cfg.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + STEP
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.02)
        self.stop()
        raise AssertionError("haproxy did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(STEP)
        self.cfg.close()


class TunnelProcess(LoggedProcess):
    """`ibgw tunnel --front 127.0.0.1:PORT --cert DIR --listen 127.0.0.1:0` in a subprocess."""

    def __init__(self, front_port: int, cert_dir, *extra: str):
        super().__init__(
            TUNNEL
            + ["--front", f"127.0.0.1:{front_port}", "--cert", str(cert_dir), "--listen", "127.0.0.1:0"]
            + list(extra)
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(STEP)
