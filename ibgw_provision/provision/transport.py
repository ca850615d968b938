"""SSH to a host with paramiko: verified host keys, counted round trips.

Host keys are checked against known_hosts and an unknown host is refused,
unless the operator opts in to trust-on-first-use (ssh's accept-new). A key
that changed is always refused.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import paramiko


class SshError(Exception):
    """A one-line reason a host could not be reached or used."""


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int
    user: str
    key: Path | None
    known_hosts: Path
    accept_new: bool


@dataclass
class Result:
    rc: int
    stdout: str
    stderr: str


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """Trust an unknown host's key once and record it; paramiko refuses changed keys itself."""

    def __init__(self, known_hosts: Path):
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        client.save_host_keys(str(self.known_hosts))


class Transport:
    def __init__(self, target: Target, connect_timeout: float = 15):
        self.target = target
        self.connect_timeout = connect_timeout
        self.round_trips = 0
        self._client: paramiko.SSHClient | None = None

    def __enter__(self) -> Transport:
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        t = self.target
        client = paramiko.SSHClient()
        if t.known_hosts.exists():
            client.load_host_keys(str(t.known_hosts))
        client.set_missing_host_key_policy(
            _AcceptNew(t.known_hosts) if t.accept_new else paramiko.RejectPolicy()
        )
        where = f"{t.user}@{t.address}:{t.port}"
        try:
            client.connect(
                t.address,
                port=t.port,
                username=t.user,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                pkey=_load_key(t.key) if t.key else None,
                look_for_keys=t.key is None,
                allow_agent=t.key is None,
            )
        except paramiko.AuthenticationException:
            raise SshError(
                f"{where}: authentication failed" + (f" with key {t.key}" if t.key else "")
            ) from None
        except paramiko.BadHostKeyException:
            raise SshError(
                f"{where}: host key does not match {t.known_hosts}: refusing (possible "
                "man-in-the-middle); if the host was rebuilt, remove its old entry"
            ) from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise SshError(
                    f"{where}: unknown host key (not in {t.known_hosts}); verify it and add it, "
                    "or pass --accept-new-host-key for first contact"
                ) from None
            raise SshError(f"{where}: {_reason(exc)}") from None
        except (TimeoutError, OSError) as exc:
            raise SshError(f"{where}: unreachable: {_reason(exc)}") from None
        self._client = client

    def close(self) -> None:
        if self._client:
            self._client.close()
            self._client = None

    def _connected(self) -> paramiko.SSHClient:
        if self._client is None:
            raise SshError(f"{self.target.name}: not connected")
        return self._client

    def _ssh(self) -> paramiko.Transport:
        transport = self._connected().get_transport()
        if transport is None:
            raise SshError(f"{self.target.name}: connection lost")
        return transport

    def run(
        self,
        command: str,
        stdin: bytes = b"",
        on_line: Callable[[str], None] | None = None,
        timeout: float = 1800,
    ) -> Result:
        """Run one command, feeding stdin; one round trip. on_line sees stdout lines as they come."""
        self.round_trips += 1
        chan: paramiko.Channel | None = None
        try:
            chan = self._ssh().open_session()
            chan.exec_command(command)
            chan.sendall(stdin)
            chan.shutdown_write()
            out, err = self._drain(chan, on_line, time.monotonic() + timeout, command)
            return Result(chan.recv_exit_status(), out, err)
        except (paramiko.SSHException, OSError, EOFError) as exc:  # EOFError: paramiko's closed socket
            raise SshError(f"{self.target.name}: connection lost: {_reason(exc)}") from None
        finally:
            if chan is not None:
                chan.close()

    def _drain(self, chan, on_line, deadline: float, command: str) -> tuple[str, str]:
        out, err, pending = bytearray(), bytearray(), b""
        while not (chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready()):
            if time.monotonic() > deadline:
                raise SshError(f"{self.target.name}: timed out running {command.split()[0]}")
            select.select([chan], [], [], 0.5)
            while chan.recv_ready():
                data = chan.recv(65536)
                out += data
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line and on_line(line.decode("utf-8", "replace"))
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
        return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    def forward(self, host: str, port: int) -> socket.socket:
        """A local socket connected to host:port as seen from the remote host (ssh -L, one connection)."""
        self.round_trips += 1
        try:
            chan = self._ssh().open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=self.connect_timeout
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(
                f"{self.target.name}: cannot reach {host}:{port} on the host: {_reason(exc)}"
            ) from None
        ours, theirs = socket.socketpair()
        threading.Thread(target=_pump, args=(chan, theirs), daemon=True).start()
        return ours

    def put_many(self, files: list[tuple[Path, str]]) -> None:
        """Copy files over one SFTP session, creating parent directories; a round trip per file."""
        try:
            with self._connected().open_sftp() as sftp:
                for local, remote in files:
                    self.round_trips += 1
                    _makedirs(sftp, str(PurePosixPath(remote).parent))
                    sftp.put(str(local), remote)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"{self.target.name}: upload failed: {_reason(exc)}") from None


def _pump(chan: paramiko.Channel, sock: socket.socket) -> None:
    """Copy bytes both ways between an SSH channel and a socket until either side closes."""
    try:
        while True:
            both: list[paramiko.Channel | socket.socket] = [chan, sock]
            readable, _, _ = select.select(both, [], [], 1.0)
            if chan in readable:
                data = chan.recv(65536)
                if not data:
                    break
                sock.sendall(data)
            if sock in readable:
                data = sock.recv(65536)
                if not data:
                    break
                chan.sendall(data)
    except OSError:
        pass
    finally:
        chan.close()
        sock.close()


def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        _makedirs(sftp, str(PurePosixPath(path).parent))
        sftp.mkdir(path, 0o755)


def _load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise SshError(f"cannot load SSH key {path}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
