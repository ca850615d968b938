"""A real SSH server in this process, on 127.0.0.1, for tests: paramiko's server side runs
commands with sh, serves SFTP from a temporary directory and opens direct-tcpip channels to
127.0.0.1 only. Every wait is bounded.
"""

from __future__ import annotations

import os
import posixpath
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ibgw_provision.provision.transport import Target

TIMEOUT = 10  # seconds: the bound of every wait in these tests


def ed25519_key(path: Path) -> paramiko.PKey:
    """A new ed25519 key, written in OpenSSH's format as ssh-keygen would."""
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


class DirSFTP(paramiko.SFTPServerInterface):
    """SFTP over a directory: the client's '/' is `root`."""

    def __init__(self, server, root: str):
        super().__init__(server)
        self.root = root

    def _real(self, path: str) -> str:
        return os.path.join(self.root, posixpath.normpath("/" + path).lstrip("/"))

    def _attrs(self, call, path):
        try:
            return paramiko.SFTPAttributes.from_stat(call(self._real(path)))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def stat(self, path):
        return self._attrs(os.stat, path)

    def lstat(self, path):
        return self._attrs(os.lstat, path)

    def mkdir(self, path, attr):
        try:
            os.mkdir(self._real(path))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return paramiko.sftp.SFTP_OK

    def open(self, path, flags, attr):
        try:
            fd = os.open(self._real(path), flags, 0o644)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        handle = paramiko.SFTPHandle(flags)
        handle.filename = self._real(path)
        handle.readfile = handle.writefile = os.fdopen(
            fd, "r+b" if flags & os.O_RDWR else "wb" if flags & os.O_WRONLY else "rb"
        )
        return handle


@dataclass
class Sshd:
    port: int
    host_key: paramiko.PKey
    client_key: Path
    root: Path  # what SFTP serves
    forwarded: list = field(default_factory=list)  # destinations of direct-tcpip channels
    transports: list = field(default_factory=list)

    def target(self, known_hosts: Path, key: Path | None = None, accept_new: bool = False) -> Target:
        return Target("gw1", "127.0.0.1", self.port, "root", key or self.client_key, known_hosts, accept_new)

    def known_line(self, key: paramiko.PKey | None = None) -> str:
        key = key or self.host_key
        return f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n"

    def drop_all(self, clean: bool = False) -> None:
        """End every connection: abruptly, or (clean) with a FIN first, which paramiko sees as EOFError."""
        for t in self.transports:
            if clean:
                try:
                    t.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            t.close()


class Server(paramiko.ServerInterface):
    def __init__(self, sshd: Sshd, allowed: paramiko.PKey):
        self.sshd, self.allowed = sshd, allowed

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        ok = username == "root" and key.asbytes() == self.allowed.asbytes()
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return (
            paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel, command):
        threading.Thread(target=run_command, args=(channel, command.decode()), daemon=True).start()
        return True

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        if destination[0] != "127.0.0.1":
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        try:
            sock = socket.create_connection(destination, timeout=TIMEOUT)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        self.sshd.forwarded.append((chanid, destination, sock))
        return paramiko.OPEN_SUCCEEDED


def run_command(chan: paramiko.Channel, command: str) -> None:
    """What sshd does for `exec`: sh -c, stdin from the channel, exit status back."""
    chan.settimeout(TIMEOUT)
    proc = subprocess.Popen(
        ["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def copy(src, send):
        try:
            while data := src.read1(65536):
                send(data)
        except OSError:  # the client went away (a timed-out run)
            pass

    pumps = [
        threading.Thread(target=copy, args=(proc.stdout, chan.sendall), daemon=True),
        threading.Thread(target=copy, args=(proc.stderr, chan.sendall_stderr), daemon=True),
    ]
    for p in pumps:
        p.start()
    try:
        while data := chan.recv(65536):
            proc.stdin.write(data)
        proc.stdin.close()
        rc = proc.wait(TIMEOUT)
        for p in pumps:
            p.join(TIMEOUT)
        chan.send_exit_status(rc)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
    finally:
        proc.wait(TIMEOUT)
        chan.close()


def pump(chan: paramiko.Channel, sock: socket.socket) -> None:
    """A forwarded connection, both ways, until either side closes or TIMEOUT passes idle."""
    try:
        for _ in range(10000):
            readable, _, _ = select.select([chan, sock], [], [], TIMEOUT)
            src, dst = (chan, sock) if chan in readable else (sock, chan) if readable else (None, None)
            data = src.recv(65536) if src else b""
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        chan.close()
        sock.close()


def serve_connection(
    sshd: Sshd, conn: socket.socket, allowed: paramiko.PKey, host_key: paramiko.PKey
) -> None:
    t = paramiko.Transport(conn)
    sshd.transports.append(t)
    t.add_server_key(host_key)
    t.set_subsystem_handler("sftp", paramiko.SFTPServer, DirSFTP, str(sshd.root))
    try:
        t.start_server(server=Server(sshd, allowed))
    except (paramiko.SSHException, EOFError, OSError):
        return
    for _ in range(100):  # channels opened on this connection, for at most 100 * 0.2 s of idling
        chan = t.accept(0.2)
        if not t.is_active():
            return
        for chanid, _destination, sock in list(sshd.forwarded):
            if chan is not None and chan.get_id() == chanid:
                threading.Thread(target=pump, args=(chan, sock), daemon=True).start()


@contextmanager
def running_sshd(tmp_path: Path) -> Iterator[Sshd]:
    """An SSH server on 127.0.0.1 for the duration: root may log in with the key it generates."""
    host_key = ed25519_key(tmp_path / "host_key")
    client = tmp_path / "id_ed25519"
    allowed = ed25519_key(client)
    (tmp_path / "sftp").mkdir()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    server = Sshd(listener.getsockname()[1], host_key, client, tmp_path / "sftp")

    def accept_loop():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=serve_connection, args=(server, conn, allowed, host_key), daemon=True
            ).start()

    loop = threading.Thread(target=accept_loop, daemon=True)
    loop.start()
    try:
        yield server
    finally:
        stop.set()
        server.drop_all()
        loop.join(TIMEOUT)
        listener.close()
