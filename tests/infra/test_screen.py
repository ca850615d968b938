"""`ibgw screen` and `ibgw vnc` against gw in the lab with the ibgw backend (stand-in IBC, real Xvfb),
through the bastion as admin with sudo.

The stand-in ibcstart.sh draws a window (xmessage) once x11-utils is on the host.
"""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ibgw_provision.provision import layout

from ..unit.test_screen import read_png
from .conftest import NAME, ROOT, fresh_host, ibgw
from .test_ibgw_backend import ENV, _artifacts, _inventory

pytestmark = pytest.mark.lab

SOCKETS = "/tmp/systemd-private-*-ibgw-*-paper.service-*/tmp/ibgw-vnc-*/vnc.sock"


@pytest.fixture(scope="module")
def inv(lab, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("screen")
    path = _inventory(tmp, _artifacts(tmp / "cache"))
    fresh_host(lab, path, env=ENV)
    return str(path)


@pytest.fixture(scope="module")
def host(inv, ssh_host):
    """The provisioned host, with x11-utils: the stand-in's window appears within a second or so."""
    install = ssh_host.run(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends x11-utils"
    )
    assert install.rc == 0, install.stderr
    return ssh_host


def _screen(inv: str, mode: str, out: Path) -> tuple[int, int, set]:
    proc = ibgw("screen", NAME, mode, "-i", inv, "-o", str(out), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    width, height, pixels = read_png(out.read_bytes())
    assert proc.stdout.strip() == f"{out}: {width}x{height} PNG, {out.stat().st_size} bytes"
    return width, height, {p for row in pixels for p in row}


def test_screen_brings_back_a_png_of_the_display_with_the_window(inv, host, tmp_path):
    out = tmp_path / "paper.png"
    deadline = time.monotonic() + 30
    while True:
        started = time.monotonic()
        width, height, colours = _screen(inv, "paper", out)
        if len(colours) > 1 or time.monotonic() > deadline:
            break
        time.sleep(1)
    print(f"screen: {out.stat().st_size} bytes, {time.monotonic() - started:.2f}s")  # noqa: T201
    assert (width, height) == (1024, 768)  # Xvfb's -screen 0 1024x768x24
    assert len(colours) > 1, "the display is blank: no window drawn"
    assert out.stat().st_mode & 0o777 == 0o600


def test_each_mode_has_its_own_display(inv, host, tmp_path):
    assert _screen(inv, "live", tmp_path / "live.png")[:2] == (1024, 768)


# Count the TCP and UDP sockets that x11vnc itself holds, by inode (not what else listens on gw).
INET_SOCKETS = (
    "import os,sys; d=f'/proc/{sys.argv[1]}/fd'; "
    "fds=[os.readlink(f'{d}/{f}') for f in os.listdir(d)]; "
    "inodes={f[8:-1] for f in fds if f.startswith('socket:')}; "
    "rows=[r.split() for n in ('tcp','tcp6','udp','udp6') "
    "for r in open('/proc/net/'+n).read().splitlines()[1:]]; "
    "print(sum(r[9] in inodes for r in rows), len(inodes))"
)


# Connect to a unix socket by its directory (the full host path is longer than AF_UNIX allows).
ATTACH = (
    "import os,socket,sys; os.chdir(os.path.dirname(sys.argv[1])); "
    "socket.socket(socket.AF_UNIX).connect(os.path.basename(sys.argv[1]))"
)


def _inet_sockets(host, pid: str) -> tuple[int, int]:
    """(TCP and UDP sockets, all sockets) that process `pid` holds."""
    inet, total = host.check_output(f'python3 -c "{INET_SOCKETS}" {pid}').split()
    return int(inet), int(total)


def _x11vnc(host) -> str:
    return host.run("ps -C x11vnc -o user=,pid=").stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_vnc(inv: str, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ibgw_provision",
            "vnc",
            NAME,
            "paper",
            "-i",
            inv,
            "--local-port",
            str(port),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a background job of a non-interactive shell (flock sh -c ... &) ignores SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=lambda: [*map(lines.put, proc.stdout), lines.put(None)], daemon=True).start()
    deadline = time.monotonic() + 60
    while (line := lines.get(timeout=max(0.1, deadline - time.monotonic()))) is not None:
        if line.strip() == f"vncviewer 127.0.0.1::{port}":
            return proc
    proc.wait(10)
    raise AssertionError(f"ibgw vnc ended (exit {proc.returncode}): {proc.stderr.read()}")  # type: ignore[union-attr]


def _rfb(port: int) -> tuple[bytes, bytes]:
    """The server's protocol version, and its security types after we answer 3.8."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        version = _read(sock, 12)
        sock.sendall(b"RFB 003.008\n")
        count = _read(sock, 1)
        return version, count + _read(sock, count[0])


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def _gone(host, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while _x11vnc(host):
        assert time.monotonic() < deadline, f"x11vnc still runs: {_x11vnc(host)}"
        time.sleep(0.25)
    assert host.run(f"ls {SOCKETS}").rc != 0, "the socket's directory was left behind"


def test_vnc_for_the_session_only_through_ssh(inv, host):
    assert not _x11vnc(host)
    port = _free_port()
    proc = _start_vnc(inv, port)
    try:
        assert _rfb(port) == (b"RFB 003.008\n", b"\x01\x01")  # one security type: none (root-only socket)
        assert _rfb(port)[0] == b"RFB 003.008\n"  # a second viewer (reconnect)
        user, pid = _x11vnc(host).split()
        assert user == layout.USER
        inet, total = _inet_sockets(host, pid)
        assert inet == 0 and total >= 2, "x11vnc has a TCP or UDP socket"  # the X display, the unix listener
        xvfb = host.check_output(f"systemctl show -p MainPID --value {layout.xvfb_unit('paper')}")
        path = host.check_output(f"ls {SOCKETS}")
        inside = f"/proc/{xvfb}/root/tmp/{path.split('/tmp/')[-1]}"  # as the host's root reaches it
        assert host.run(f"test -S {inside}").rc == 0
        for user in ("nobody", layout.USER):  # another local user, and the gateway's outside its namespace
            for where in (path, inside):
                attach = host.run(f"runuser -u {user} -- python3 -c '{ATTACH}' {where}")
                assert attach.rc != 0 and "PermissionError" in attach.stderr, (user, where, attach.stderr)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stderr.read()  # type: ignore[union-attr]
    _gone(host)


def test_vnc_stops_when_the_operator_side_dies(inv, host):
    port = _free_port()
    proc = _start_vnc(inv, port)
    assert _x11vnc(host)
    proc.kill()  # no clean close: the SSH connection just drops
    proc.wait(10)
    _gone(host)
