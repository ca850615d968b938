"""The rendered nftables ruleset, loaded in a network namespace of this test's own (loopback only):
on lo, only root and the gateway user may open a gateway's API port (IB Gateway trusts 127.0.0.1)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from ibgw_provision.provision import layout

NAMESPACE = "ibgwtest-gateadm"
IBKR_UID = 990  # the gateway user's uid in this test's passwd
LISTENER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); s.settimeout(0.2)
print("ready", flush=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        s.accept()[0].close()
    except TimeoutError:
        pass
"""
CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__)
"""


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def namespace():
    if os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("setpriv"):
        pytest.fail("this test needs root, nft and setpriv (CI and `make test` run as root)")
    _run(["ip", "netns", "delete", NAMESPACE])  # left by an interrupted run
    assert _run(["ip", "netns", "add", NAMESPACE]).returncode == 0
    try:
        assert _run(["ip", "netns", "exec", NAMESPACE, "ip", "link", "set", "lo", "up"]).returncode == 0
        yield NAMESPACE
    finally:
        _run(["ip", "netns", "delete", NAMESPACE])


def _in_namespace(tmp_path, script: str) -> subprocess.CompletedProcess:
    """`script` (sh) in private mounts where the gateway user exists, as on a provisioned host."""
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text() + f"{layout.USER}:x:{IBKR_UID}:{IBKR_UID}::/nonexistent:/bin/false\n"
    )
    group.write_text(Path("/etc/group").read_text() + f"{layout.GROUP}:x:{IBKR_UID}:\n")
    return _run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        env=os.environ | {"PASSWD": str(passwd), "GROUP": str(group)},
    )


def test_only_root_and_the_gateway_user_reach_the_api_ports_on_lo(rendered, namespace, tmp_path):
    (ruleset,) = [p for path, p in rendered["example"].items() if path.endswith("/firewall.nft")]
    ports = sorted(
        int(p)
        for p in re.search(r"tcp dport \{ ([\d, ]+) \} ct state new", ruleset.read_text())[1].split(",")
    )
    (tmp_path / "listen.py").write_text(LISTENER)
    python, ns, connect = "/usr/bin/python3", f"ip netns exec {namespace}", shlex.quote(CONNECT)
    as_user = {
        "root": "",
        "ibkr": f"setpriv --reuid={IBKR_UID} --regid={IBKR_UID} --clear-groups",
        "nobody": "setpriv --reuid=65534 --regid=65534 --clear-groups",
    }
    connects = "".join(
        f'echo "{who} {port} $({ns} {cmd} {python} -c {connect} {port})"\n'
        for port in ports
        for who, cmd in as_user.items()
    )
    done = _in_namespace(
        tmp_path,
        f"""
        mount --bind "$PASSWD" /etc/passwd
        mount --bind "$GROUP" /etc/group
        {ns} nft -f {ruleset}
        for port in {" ".join(map(str, ports))}; do
            {ns} {python} {tmp_path}/listen.py $port > {tmp_path}/listen-$port.out &
            pids="${{pids:-}} $!"
        done
        for i in $(seq 100); do
            [ "$(cat {tmp_path}/listen-*.out | grep -c ready)" = {len(ports)} ] && break
            sleep 0.05
        done
        {connects}
        {ns} nft list chain inet ibgw output >&2
        kill $pids
        """,
    )
    assert done.returncode == 0, done.stderr
    results = dict(line.rsplit(" ", 1) for line in done.stdout.splitlines())
    assert results == {
        f"{who} {port}": "connected" if who != "nobody" else "ConnectionRefusedError"
        for port in ports
        for who in as_user
    }, done.stderr
