"""In-process SSH servers on 127.0.0.1 for login tests: per-user public keys, a forced command (a
cloud image's root), direct-tcpip (a bastion), SFTP on the real file system with a home directory,
and a stand-in `sudo` first in PATH that reads -S's password from stdin as sudo does. Each server
counts its connections and commands. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

TIMEOUT = 10  # seconds: the bound of every wait here

# sudo as the agent's callers use it: -n (never ask) or -S -p '' (the password as stdin's first line,
# read a byte at a time so the rest stays for the command). Every argv is logged.
FAKE_SUDO = """#!/bin/sh
printf '%s\\n' "$*" >> "$SUDO_LOG"
mode=
while [ $# -gt 0 ]; do
  case "$1" in
    -n) mode=n; shift;;
    -S) mode=S; shift;;
    -p) shift 2;;
    *) break;;
  esac
done
if [ -n "$SUDO_PASSWORD" ]; then
  if [ "$mode" = n ]; then echo "sudo: a password is required" >&2; exit 1; fi
  IFS= read -r given
  if [ "$given" != "$SUDO_PASSWORD" ]; then
    echo "Sorry, try again." >&2; echo "sudo: 1 incorrect password attempt" >&2; exit 1
  fi
fi
exec "$@"
"""


def new_key(path: Path, passphrase: str | None = None) -> paramiko.PKey:
    """An ed25519 key in OpenSSH's format, as ssh-keygen writes it (encrypted with a passphrase)."""
    private = ed25519.Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode())
        if passphrase
        else serialization.NoEncryption()
    )
    path.write_bytes(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    )
    path.chmod(0o600)
    return paramiko.Ed25519Key.from_private_key_file(str(path), password=passphrase)


class HomeSFTP(paramiko.SFTPServerInterface):
    """SFTP on the real file system; a relative path is under `home`, as sftp-server does."""

    def __init__(self, server, home: str):
        super().__init__(server)
        self.home = home

    def _real(self, path: str) -> str:
        return path if path.startswith("/") else os.path.normpath(os.path.join(self.home, path))

    def canonicalize(self, path):
        return self._real(path or ".")

    def _result(self, call, *args):
        try:
            out = call(*args)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        return (
            paramiko.SFTPAttributes.from_stat(out)
            if isinstance(out, os.stat_result)
            else paramiko.sftp.SFTP_OK
        )

    def stat(self, path):
        return self._result(os.stat, self._real(path))

    def lstat(self, path):
        return self._result(os.lstat, self._real(path))

    def mkdir(self, path, attr):
        return self._result(os.mkdir, self._real(path), attr.st_mode or 0o777)

    def chattr(self, path, attr):
        return self._result(os.chmod, self._real(path), attr.st_mode) if attr.st_mode is not None else 0

    def open(self, path, flags, attr):
        try:
            fd = os.open(self._real(path), flags, 0o600)
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)
        handle = paramiko.SFTPHandle(flags)
        handle.filename = self._real(path)
        mode = "r+b" if flags & os.O_RDWR else "wb" if flags & os.O_WRONLY else "rb"
        handle.readfile = handle.writefile = os.fdopen(fd, mode)
        return handle


@dataclass
class Sshd:
    port: int
    host_key: paramiko.PKey
    home: Path
    users: dict[str, list[paramiko.PKey]]
    forced: dict[str, tuple[str, int]] = field(default_factory=dict)  # user -> (message, exit status)
    env: dict[str, str] = field(default_factory=dict)  # for commands: PATH with the fake sudo, ...
    agent_reply: Callable[[dict], dict] | None = None  # answer the agent's request without running it
    forward_delay: float = 0  # seconds a direct-tcpip request waits (a target that drops SYNs)
    connections: int = 0
    commands: list[str] = field(default_factory=list)
    stdins: list[bytes] = field(default_factory=list)
    forwarded: list[tuple[str, int]] = field(default_factory=list)
    transports: list[paramiko.Transport] = field(default_factory=list)

    def known_line(self, key: paramiko.PKey | None = None) -> str:
        key = key or self.host_key
        return f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n"


class Server(paramiko.ServerInterface):
    def __init__(self, sshd: Sshd):
        self.sshd = sshd
        self.pending: dict[int, socket.socket] = {}
        self.user = ""

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        ok = any(k.asbytes() == key.asbytes() for k in self.sshd.users.get(username, []))
        self.user = username if ok else self.user
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        return (
            paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        )

    def check_channel_exec_request(self, channel, command):
        self.sshd.commands.append(command.decode())
        threading.Thread(target=self._exec, args=(channel, command.decode()), daemon=True).start()
        return True

    def check_channel_subsystem_request(self, channel, name):
        return self.user not in self.sshd.forced and super().check_channel_subsystem_request(channel, name)

    def check_channel_direct_tcpip_request(self, chanid, origin, destination):
        if destination[0] != "127.0.0.1":
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        time.sleep(min(self.sshd.forward_delay, TIMEOUT))
        try:
            sock = socket.create_connection(destination, timeout=TIMEOUT)
        except OSError:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        self.sshd.forwarded.append(destination)
        self.pending[chanid] = sock
        return paramiko.OPEN_SUCCEEDED

    def _exec(self, chan: paramiko.Channel, command: str) -> None:
        chan.settimeout(TIMEOUT)
        try:
            if self.user in self.sshd.forced:
                message, status = self.sshd.forced[self.user]
                chan.sendall(f"{message}\n\n".encode())
                _wait_closed(chan, 10)  # cloud-init's forced command sleeps 10 s before it exits
                chan.send_exit_status(status)
            elif self.sshd.agent_reply and "ibgw-agent" in command:
                self._reply(chan)
            else:
                run_command(chan, command, self.sshd)
        except OSError:
            pass
        finally:
            chan.close()

    def _reply(self, chan: paramiko.Channel) -> None:
        data = _read_all(chan)
        self.sshd.stdins.append(data)
        header = data.index(b"IBGW-AGENT ")
        size_end = data.index(b"\n", header)
        size = int(data[header + 11 : size_end])
        request = json.loads(data[size_end + 1 + size :])
        assert self.sshd.agent_reply is not None
        chan.sendall((json.dumps({"result": self.sshd.agent_reply(request)}) + "\n").encode())
        chan.send_exit_status(0)


def _read_all(chan: paramiko.Channel) -> bytes:
    data = b""
    while chunk := chan.recv(65536):
        data += chunk
    return data


def _wait_closed(chan: paramiko.Channel, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not chan.closed and chan.get_transport().is_active():
        time.sleep(0.05)


def run_command(chan: paramiko.Channel, command: str, sshd: Sshd) -> None:
    """What sshd does for `exec`: sh -c in the home directory, stdin from the channel, exit status back."""
    env = {**os.environ, "HOME": str(sshd.home), **sshd.env}
    proc = subprocess.Popen(
        ["sh", "-c", command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=sshd.home,
        env=env,
    )

    def copy(src, send):
        try:
            while data := src.read1(65536):
                send(data)
        except OSError:
            pass

    pumps = [
        threading.Thread(target=copy, args=(proc.stdout, chan.sendall), daemon=True),
        threading.Thread(target=copy, args=(proc.stderr, chan.sendall_stderr), daemon=True),
    ]
    for p in pumps:
        p.start()
    data = b""
    try:
        while chunk := chan.recv(65536):
            data += chunk
            proc.stdin.write(chunk)
            proc.stdin.flush()  # as sshd passes it on: a relayed stream waits for no more
        proc.stdin.close()
    except OSError:
        pass
    sshd.stdins.append(data)
    try:
        rc = proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait(TIMEOUT)
    for p in pumps:
        p.join(TIMEOUT)
    chan.send_exit_status(rc)


def _pump(chan: paramiko.Channel, sock: socket.socket) -> None:
    try:
        for _ in range(100000):
            readable, _, _ = select.select([chan, sock], [], [], TIMEOUT)
            if not readable:
                break
            src, dst = (chan, sock) if chan in readable else (sock, chan)
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        sock.close()
        try:
            chan.close()
        except EOFError:  # the connection is already gone
            pass


def _serve(sshd: Sshd, conn: socket.socket) -> None:
    t = paramiko.Transport(conn)
    sshd.transports.append(t)
    t.add_server_key(sshd.host_key)
    t.set_subsystem_handler("sftp", paramiko.SFTPServer, HomeSFTP, str(sshd.home))
    server = Server(sshd)
    try:
        t.start_server(server=server)
    except (paramiko.SSHException, EOFError, OSError):
        return
    for _ in range(300):  # channels on this connection, for at most 300 * 0.2 s
        chan = t.accept(0.2)
        if chan is not None and chan.get_id() in server.pending:
            threading.Thread(
                target=_pump, args=(chan, server.pending.pop(chan.get_id())), daemon=True
            ).start()
        if not t.is_active():
            return


@contextmanager
def sshd(tmp: Path, users: dict[str, list[paramiko.PKey]], **options) -> Iterator[Sshd]:
    """A server on 127.0.0.1 and a free port, with its own host key and home directory."""
    home = tmp / f"home-{os.urandom(3).hex()}"
    home.mkdir(mode=0o700)
    host_key = paramiko.Ed25519Key.from_private_key_file(str(_keyfile(tmp)))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    server = Sshd(listener.getsockname()[1], host_key, home, users, **options)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            server.connections += 1
            threading.Thread(target=_serve, args=(server, conn), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(TIMEOUT)
        listener.close()
        for t in server.transports:
            t.close()


def _keyfile(tmp: Path) -> Path:
    path = tmp / f"hostkey-{os.urandom(3).hex()}"
    new_key(path)
    return path


def fake_sudo(tmp: Path, password: str | None = None) -> dict[str, str]:
    """The environment for commands: the stand-in sudo first in PATH, its argv log, its password."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "sudo").write_text(FAKE_SUDO)
    (bin_dir / "sudo").chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SUDO_LOG": str(tmp / "sudo.log"),
        "SUDO_PASSWORD": password or "",
    }
