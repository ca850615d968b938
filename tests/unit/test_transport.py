"""SSH transport against a real SSH server in this process, on 127.0.0.1: paramiko's server side
runs commands with sh, serves SFTP from a temporary directory and opens direct-tcpip channels to
127.0.0.1 only. Every wait is bounded.
"""

from __future__ import annotations

import os
import posixpath
import select
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ibgw_provision.provision import call_agent
from ibgw_provision.transport import SshError, Target, Transport

TIMEOUT = 10  # seconds: the bound of every wait in these tests


def ed25519_key(path: Path) -> paramiko.PKey:
    """A new ed25519 key, written in OpenSSH's format as ssh-keygen would."""
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
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
        handle.readfile = handle.writefile = os.fdopen(fd, "r+b" if flags & os.O_RDWR else
                                                       "wb" if flags & os.O_WRONLY else "rb")
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
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

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
    proc = subprocess.Popen(["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)

    def copy(src, send):
        while data := src.read1(65536):
            send(data)

    pumps = [threading.Thread(target=copy, args=(proc.stdout, chan.sendall), daemon=True),
             threading.Thread(target=copy, args=(proc.stderr, chan.sendall_stderr), daemon=True)]
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


def serve_connection(sshd: Sshd, conn: socket.socket, allowed: paramiko.PKey, host_key: paramiko.PKey) -> None:
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
        for chanid, destination, sock in list(sshd.forwarded):
            if chan is not None and chan.get_id() == chanid:
                threading.Thread(target=pump, args=(chan, sock), daemon=True).start()


@pytest.fixture
def sshd(tmp_path):
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
            threading.Thread(target=serve_connection, args=(server, conn, allowed, host_key), daemon=True).start()

    loop = threading.Thread(target=accept_loop, daemon=True)
    loop.start()
    yield server
    stop.set()
    server.drop_all()
    loop.join(TIMEOUT)
    listener.close()


@pytest.fixture
def known(tmp_path, sshd) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_line())
    return path


def connect(target: Target) -> Transport:
    transport = Transport(target, connect_timeout=TIMEOUT)
    transport.connect()
    return transport


# ---- host keys and authentication --------------------------------------------------

def test_an_unknown_host_is_refused(sshd, tmp_path):
    known_hosts = tmp_path / "ssh" / "known_hosts"
    with pytest.raises(SshError) as refused:
        connect(sshd.target(known_hosts))
    assert str(refused.value) == (f"root@127.0.0.1:{sshd.port}: unknown host key (not in {known_hosts}); verify it "
                                  "and add it, or pass --accept-new-host-key for first contact")
    assert not known_hosts.exists()


def test_accept_new_records_the_key_and_later_runs_verify_it(sshd, tmp_path):
    known_hosts = tmp_path / "ssh" / "known_hosts"  # its directory is created too
    with connect(sshd.target(known_hosts, accept_new=True)) as transport:
        assert transport.run("true").rc == 0
    assert known_hosts.read_text() == sshd.known_line()
    with connect(sshd.target(known_hosts)) as transport:  # no longer first contact
        assert transport.run("echo again").stdout == "again\n"


@pytest.mark.parametrize("accept_new", [False, True])
def test_a_changed_host_key_is_refused_even_with_accept_new(sshd, tmp_path, accept_new):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_line(ed25519_key(tmp_path / "old_host_key")))
    before = known_hosts.read_text()
    with pytest.raises(SshError) as refused:
        connect(sshd.target(known_hosts, accept_new=accept_new))
    assert str(refused.value) == (f"root@127.0.0.1:{sshd.port}: host key does not match {known_hosts}: refusing "
                                  "(possible man-in-the-middle); if the host was rebuilt, remove its old entry")
    assert known_hosts.read_text() == before


def test_authentication_failure_names_the_key(sshd, known, tmp_path):
    other = tmp_path / "other_key"
    ed25519_key(other)
    with pytest.raises(SshError) as refused:
        connect(sshd.target(known, key=other))
    assert str(refused.value) == f"root@127.0.0.1:{sshd.port}: authentication failed with key {other}"


def test_an_unreadable_key_is_one_line(sshd, known, tmp_path):
    bad = tmp_path / "not_a_key"
    bad.write_text("hello\n")
    with pytest.raises(SshError) as refused:
        connect(sshd.target(known, key=bad))
    assert str(refused.value).startswith(f"cannot load SSH key {bad}: ") and "\n" not in str(refused.value)
    with pytest.raises(SshError, match=f"^cannot load SSH key {tmp_path}/missing: "):
        connect(sshd.target(known, key=tmp_path / "missing"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_host_is_one_line(tmp_path):
    port = free_port()
    target = Target("gw1", "127.0.0.1", port, "root", None, tmp_path / "known_hosts", False)
    with pytest.raises(SshError) as refused:
        connect(target)
    assert str(refused.value).startswith(f"root@127.0.0.1:{port}: unreachable: ")
    assert f"Unable to connect to port {port} on 127.0.0.1" in str(refused.value)


def test_a_server_that_is_not_ssh_is_one_line(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def answer():
        with listener, listener.accept()[0] as conn:
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    port = listener.getsockname()[1]
    target = Target("gw1", "127.0.0.1", port, "root", None, tmp_path / "known_hosts", False)
    with pytest.raises(SshError) as refused:
        Transport(target, connect_timeout=2).connect()
    assert str(refused.value).startswith(f"root@127.0.0.1:{port}: ") and "\n" not in str(refused.value)


# ---- commands ------------------------------------------------------------------

def test_run_feeds_stdin_and_returns_exit_code_output_and_lines(sshd, known):
    lines = []
    with connect(sshd.target(known)) as transport:
        result = transport.run("cat; echo oops >&2; exit 3", stdin=b"one\ntwo\n", on_line=lines.append)
        assert (result.rc, result.stdout, result.stderr) == (3, "one\ntwo\n", "oops\n")
        assert lines == ["one", "two"]
        big = b"".join(b"%06d\n" % i for i in range(20000))  # more than one SSH window
        assert transport.run("cat", stdin=big).stdout == big.decode()
        assert transport.round_trips == 2


def test_run_lines_are_split_across_chunks(sshd, known):
    lines = []
    with connect(sshd.target(known)) as transport:
        transport.run("printf 'par'; sleep 0.3; printf 'tial\\nnext\\n'", on_line=lines.append)
    assert lines == ["partial", "next"]


def test_run_times_out(sshd, known):
    with connect(sshd.target(known)) as transport:
        with pytest.raises(SshError, match="^gw1: timed out running sleep$"):
            transport.run("sleep 3", timeout=0.5)


@pytest.mark.parametrize("operation, error", [
    (lambda t, tmp: t.run("true", timeout=TIMEOUT), "^gw1: connection lost: "),
    (lambda t, tmp: t.forward("127.0.0.1", 9), "^gw1: cannot reach 127.0.0.1:9 on the host: "),
    (lambda t, tmp: t.put_many([(tmp / "known_hosts", "/k")]), "^gw1: upload failed: "),
], ids=["run", "forward", "put_many"])
@pytest.mark.parametrize("clean", [False, True], ids=["reset", "eof"])
def test_every_operation_after_the_connection_is_lost_is_one_line(sshd, known, tmp_path, operation, error, clean):
    with connect(sshd.target(known)) as transport:
        sshd.drop_all(clean)
        with pytest.raises(SshError, match=error):
            for _ in range(50):  # the client notices the closed connection within a few tries
                operation(transport, tmp_path)


def test_the_agent_runs_over_ssh(sshd, known, tmp_path):
    """provision.call_agent, end to end: the agent's source and request on stdin, its result back."""
    (tmp_path / "stamp").write_text("installed")
    events = []
    with connect(sshd.target(known)) as transport:
        facts = call_agent(transport, {"op": "facts", "packages": [], "user": "root", "paths": [str(tmp_path)],
                                       "units": [], "markers": [str(tmp_path / "stamp")]})
        result = call_agent(transport, {"op": "apply", "steps": [{"kind": "bogus", "task": "t"}]},
                            on_event=events.append)
    assert facts["markers"] == {str(tmp_path / "stamp"): "installed"}
    assert facts["paths"][str(tmp_path)]["kind"] == "dir"
    assert result == {"applied": 0, "failed": "t", "error": "KeyError: 'bogus'"}
    assert events == [{"event": "start", "task": "t"}, {"event": "failed", "task": "t", "error": "KeyError: 'bogus'"}]


# ---- forwarding ----------------------------------------------------------------

@pytest.fixture
def echo_server():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def echo():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


def test_forward_reaches_a_port_as_the_host_sees_it(sshd, known, echo_server):
    with connect(sshd.target(known)) as transport:
        local = transport.forward("127.0.0.1", echo_server)
        local.settimeout(TIMEOUT)
        for message in (b"ping", b"x" * 5000):
            local.sendall(message)
            got = b""
            while len(got) < len(message):
                got += local.recv(65536)
            assert got == message
        local.close()
        assert transport.round_trips == 1
    assert [destination for _, destination, _ in sshd.forwarded] == [("127.0.0.1", echo_server)]


def test_forward_to_a_closed_port_is_one_line(sshd, known):
    port = free_port()
    with connect(sshd.target(known)) as transport:
        with pytest.raises(SshError) as refused:
            transport.forward("127.0.0.1", port)
    assert str(refused.value).startswith(f"gw1: cannot reach 127.0.0.1:{port} on the host: ")
    assert "\n" not in str(refused.value)


# ---- uploads -------------------------------------------------------------------

def test_put_many_uploads_over_sftp_making_parent_directories(sshd, known, tmp_path):
    wheel, zipped = tmp_path / "ibgw-0.1.0-py3-none-any.whl", tmp_path / "IBCLinux.zip"
    wheel.write_bytes(os.urandom(70000))
    zipped.write_bytes(b"PK\x03\x04zip")
    (sshd.root / "opt").mkdir()  # exists already: only what is missing is made
    with connect(sshd.target(known)) as transport:
        transport.put_many([(wheel, "/opt/ibgw/wheels/ibgw.whl"), (zipped, "/opt/ibgw/uploads/ibc/IBCLinux.zip")])
        assert transport.round_trips == 2
    assert (sshd.root / "opt/ibgw/wheels/ibgw.whl").read_bytes() == wheel.read_bytes()
    assert (sshd.root / "opt/ibgw/uploads/ibc/IBCLinux.zip").read_bytes() == b"PK\x03\x04zip"


def test_a_failed_upload_is_one_line(sshd, known, tmp_path):
    (sshd.root / "opt").write_text("a file where a directory belongs")
    local = tmp_path / "w.whl"
    local.write_bytes(b"w")
    with connect(sshd.target(known)) as transport:
        with pytest.raises(SshError) as failed:
            transport.put_many([(local, "/opt/ibgw/w.whl")])
    assert str(failed.value).startswith("gw1: upload failed: ") and "\n" not in str(failed.value)
