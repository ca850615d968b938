"""SSH transport against a real SSH server in this process, on 127.0.0.1 (sshkit): host keys,
authentication, commands, forwarding and SFTP uploads; every failure is one SshError line.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from ibgw_provision.provision.remote import call_agent
from ibgw_provision.provision.transport import SshError, Target, Transport

from .sshkit import TIMEOUT, ed25519_key, running_sshd


@pytest.fixture
def sshd(tmp_path):
    with running_sshd(tmp_path) as server:
        yield server


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
    assert str(refused.value) == (
        f"root@127.0.0.1:{sshd.port}: unknown host key (not in {known_hosts}); verify it "
        "and add it, or pass --accept-new-host-key for first contact"
    )
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
    assert str(refused.value) == (
        f"root@127.0.0.1:{sshd.port}: host key does not match {known_hosts}: refusing "
        "(possible man-in-the-middle); if the host was rebuilt, remove its old entry"
    )
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


def test_a_transport_not_connected_says_so(sshd, known):
    transport = Transport(sshd.target(known), connect_timeout=TIMEOUT)
    with pytest.raises(SshError, match="^gw1: not connected$"):
        transport.run("true")
    transport.connect()
    transport.close()
    with pytest.raises(SshError, match="^gw1: not connected$"):
        transport.put_many([])


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


@pytest.mark.parametrize(
    "operation, error",
    [
        (lambda t, tmp: t.run("true", timeout=TIMEOUT), "^gw1: connection lost: "),
        (lambda t, tmp: t.forward("127.0.0.1", 9), "^gw1: cannot reach 127.0.0.1:9 on the host: "),
        (lambda t, tmp: t.put_many([(tmp / "known_hosts", "/k")]), "^gw1: upload failed: "),
    ],
    ids=["run", "forward", "put_many"],
)
@pytest.mark.parametrize("clean", [False, True], ids=["reset", "eof"])
def test_every_operation_after_the_connection_is_lost_is_one_line(
    sshd, known, tmp_path, operation, error, clean
):
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
        facts = call_agent(
            transport,
            {
                "op": "facts",
                "packages": [],
                "user": "root",
                "paths": [str(tmp_path)],
                "units": [],
                "markers": [str(tmp_path / "stamp")],
            },
        )
        result = call_agent(
            transport, {"op": "apply", "steps": [{"kind": "bogus", "task": "t"}]}, on_event=events.append
        )
    assert facts["markers"] == {str(tmp_path / "stamp"): "installed"}
    assert facts["paths"][str(tmp_path)]["kind"] == "dir"
    assert result == {"applied": 0, "failed": "t", "error": "KeyError: 'bogus'"}
    assert events == [
        {"event": "start", "task": "t"},
        {"event": "failed", "task": "t", "error": "KeyError: 'bogus'"},
    ]


# ---- forwarding ----------------------------------------------------------------


@pytest.fixture
def echo_server():
    """An echo server on 127.0.0.1 for one connection: its port, and an event set when it ends."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    ended = threading.Event()

    def echo():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(TIMEOUT)
            while data := conn.recv(65536):
                conn.sendall(data)
        ended.set()

    threading.Thread(target=echo, daemon=True).start()
    yield listener.getsockname()[1], ended
    listener.close()


def receive(sock: socket.socket, size: int) -> bytes:
    got = b""
    for _ in range(100):
        chunk = sock.recv(65536)
        got += chunk
        if not chunk or len(got) >= size:
            break
    return got


def test_forward_reaches_a_port_as_the_host_sees_it(sshd, known, echo_server):
    port, ended = echo_server
    with connect(sshd.target(known)) as transport:
        local = transport.forward("127.0.0.1", port)
        local.settimeout(TIMEOUT)
        for message in (b"ping", b"x" * 5000):
            local.sendall(message)
            assert receive(local, len(message)) == message
        assert transport.round_trips == 1
        local.close()  # the app hangs up: so does the connection on the host
        assert ended.wait(TIMEOUT)
    assert [destination for _, destination, _ in sshd.forwarded] == [("127.0.0.1", port)]


def test_forward_ends_when_the_far_side_closes(sshd, known):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def greet_and_hang_up():
        with listener, listener.accept()[0] as conn:
            conn.sendall(b"bye")

    threading.Thread(target=greet_and_hang_up, daemon=True).start()
    with connect(sshd.target(known)) as transport:
        local = transport.forward("127.0.0.1", listener.getsockname()[1])
        local.settimeout(TIMEOUT)
        assert receive(local, 3) == b"bye"
        assert local.recv(1) == b""  # end of stream, not a hang
        local.close()


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
        transport.put_many(
            [(wheel, "/opt/ibgw/wheels/ibgw.whl"), (zipped, "/opt/ibgw/uploads/ibc/IBCLinux.zip")]
        )
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


def test_the_pump_ends_quietly_when_the_transport_is_gone_at_close():
    """paramiko raises EOFError from close() once its transport has gone: the pump's thread must not
    print a traceback (health's output is read by people and by scripts)."""
    from ibgw_provision.provision.transport import _pump

    ours, theirs = socket.socketpair()
    chan_end, far = socket.socketpair()

    class Closed:
        def fileno(self) -> int:
            return chan_end.fileno()

        def recv(self, size: int) -> bytes:
            return b""  # the channel's end of file

        def close(self) -> None:
            raise EOFError()

    far.close()
    with ours, theirs, chan_end:
        _pump(Closed(), ours)  # type: ignore[arg-type]
        assert ours.fileno() == -1  # the socket side was closed all the same
