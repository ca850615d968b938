"""The testinfra suite's host: gw in the lab (tests/lab/lab), provisioned for real through the bastion.

Each test module gets a fresh gw (`lab.reset()`: a clean root filesystem, with the first-boot dpkg
lock held) and provisions it with the real `ibgw provision`, as `admin` with sudo, through the
bastion. The suite's inventory is inventories/lab.yml (firewall on, SSH from the bastion only)
with this machine, the lab's operator (198.18.0.1), added to every app's sources: the tests run
their clients from here, across gw's live nftables rules. Needs root (skipped otherwise, as the
lab is).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import testinfra
import yaml

from ibgw_provision import inventory
from tests.kit.lab import LAB

ROOT = Path(__file__).resolve().parents[2]
LAB_INVENTORY = ROOT / "inventories" / "lab.yml"
NAME = "gw"
HOST = inventory.load(LAB_INVENTORY).hosts[NAME]
GW = HOST.address  # gw's lab address; the front binds there (front.bind)
OPERATOR = "198.18.0.1"  # this machine on the lab's network (tests/lab/lab's fixed plan)


def ibgw(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "ibgw_provision", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def recap(proc: subprocess.CompletedProcess, host: str = NAME) -> dict[str, int]:
    """The PLAY RECAP row of one host: ok, changed, unreachable, failed, round trips."""
    match = re.search(rf"^{host}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", proc.stdout, flags=re.M)
    assert match, proc.stdout + proc.stderr
    keys = ("ok", "changed", "unreachable", "failed", "round_trips")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def suite_doc() -> dict:
    """inventories/lab.yml as the suite uses it: absolute SSH paths; the operator in every app's
    sources, as 127.0.0.1 was on the shared-network test host; paper's simulator on loopback
    (live's stays on every interface, as IB Gateway binds); and live's restarts never held by the
    clock (tests/unit decide those on a fake one)."""
    doc = yaml.safe_load(LAB_INVENTORY.read_text())
    host = doc["hosts"][NAME]
    for key in ("key", "known_hosts"):
        host["ssh"][key] = str((LAB_INVENTORY.parent / host["ssh"][key]).resolve())
    for app in host["apps"]:
        app["sources"] = [*app["sources"], f"{OPERATOR}/32"]
    paper, live = host["gateways"]
    assert (paper["mode"], live["mode"]) == ("paper", "live")
    paper["simulator"]["listen"] = "loopback"
    live["trading_hours"] = {"days": []}
    return doc


def suite_inventory(tmp: Path, edit: Callable[[dict], None] | None = None, name: str = "gw") -> Path:
    """The suite's inventory written to tmp/NAME.yml; `edit` changes its gw host (a dict) first."""
    doc = suite_doc()
    if edit:
        edit(doc["hosts"][NAME])
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def fresh_host(lab, inventory: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """A fresh gw (the lab's reset), provisioned from `inventory`; return the first run."""
    lab.reset()
    first = ibgw("provision", NAME, "-i", str(inventory), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    return first


def on_gw(lab, code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Python code run as root on gw itself (in its network namespace, e.g. from its loopback)."""
    return lab.exec(NAME, ["python3", "-c", code, *args], timeout=timeout)


def on_node(node: str, code: str, *args: str) -> subprocess.Popen:
    """Python code run in a lab node's network namespace (app-a, app-b, outsider), in the background,
    with this venv's interpreter: its stdin and stdout are pipes to talk to it."""
    return subprocess.Popen(
        [str(LAB), "exec", node, sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# A TWS API hello; prints the server's first reply in hex, or nothing if the connection was refused.
HANDSHAKE = """
import socket, sys
source, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
version = b"v100..178"
reply = b""
try:  # a refusal resets the connection: at the send or at the receive, whichever comes first
    with socket.create_connection((address, port), timeout=5, source_address=(source, 0)) as sock:
        sock.sendall(b"API\\0" + len(version).to_bytes(4, "big") + version)
        reply = sock.recv(4096)
except (ConnectionResetError, BrokenPipeError):
    pass
print(reply.hex())
"""


def tws_hello(lab, where: str, source: str, port: int) -> bytes:
    """Open a TWS API connection to gw's front from `source`, here (the operator) or on gw itself."""
    args = (source, GW, str(port))
    if where == NAME:
        proc = on_gw(lab, HANDSHAKE, *args)
    else:
        proc = subprocess.run(
            [sys.executable, "-c", HANDSHAKE, *args], capture_output=True, text=True, timeout=30
        )
    assert proc.returncode == 0, proc.stderr
    return bytes.fromhex(proc.stdout.strip())


@pytest.fixture(scope="session")
def ssh_host(lab):
    """testinfra on gw: OpenSSH as admin through the bastion (the lab's ssh_config, pinned host keys),
    each command under sudo. One multiplexed connection, closed at the end."""
    control = Path(tempfile.mkdtemp(prefix="ibgw-cm-")) / "%C"
    host = testinfra.get_host(
        "ssh://lab-gw",
        ssh_config=str(lab.ssh_config),
        sudo=True,
        controlpath=str(control).replace("%", "%%"),  # testinfra %-formats its ssh command line
        ssh_extra_args="-o ServerAliveInterval=5 -o ServerAliveCountMax=3",
    )
    yield host
    subprocess.run(
        ["ssh", "-F", str(lab.ssh_config), "-o", f"ControlPath={control}", "-O", "exit", "lab-gw"],
        capture_output=True,
        timeout=30,
    )
    shutil.rmtree(control.parent, ignore_errors=True)
