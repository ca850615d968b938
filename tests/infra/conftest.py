"""The disposable systemd host (tests/host/testhost.sh), provisioned for real over SSH.

Each test module gets a fresh boot (the rootfs is a volatile overlay) and
provisions it with the real `ibgw provision`; the host is stopped at the end.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[2]
TESTHOST = ROOT / "tests" / "host" / "testhost.sh"
LOCAL = ROOT / "inventories" / "local.yml"
# The same suite runs against the nspawn host (default) or the Vagrant VM
# (IBGW_TEST_HOST=vagrant, `make vm-test`): only the SSH material differs.
VAGRANT = os.environ.get("IBGW_TEST_HOST") == "vagrant"
SSH_DIR = ROOT / "build" / ("vagrant" if VAGRANT else "testhost")
SSH_CONFIG = SSH_DIR / "ssh_config"


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


def recap(proc: subprocess.CompletedProcess, host: str = "local") -> dict[str, int]:
    """The PLAY RECAP row of one host: ok, changed, unreachable, failed, round trips."""
    match = re.search(rf"^{host}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", proc.stdout, flags=re.M)
    assert match, proc.stdout + proc.stderr
    keys = ("ok", "changed", "unreachable", "failed", "round_trips")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def _testhost(command: str) -> None:
    if VAGRANT:
        argv = {"up": ["vagrant", "up"], "down": ["vagrant", "destroy", "-f"]}.get(command)
        argv and subprocess.run(argv, cwd=ROOT, check=True, timeout=1800, capture_output=True)
    else:
        subprocess.run([str(TESTHOST), command], check=True, timeout=900, capture_output=True)


def for_target(inventory: Path, tmp: Path) -> Path:
    """A copy of `inventory` whose SSH key and known_hosts are the test target's."""
    text = inventory.read_text().replace("../build/testhost", str(SSH_DIR))
    text = text.replace(str(ROOT / "build" / "testhost"), str(SSH_DIR))
    copy = tmp / inventory.name
    copy.write_text(text)
    return copy


def fresh_host(inventory: Path, tmp: Path) -> tuple[Path, subprocess.CompletedProcess]:
    """Boot a fresh test host, provision it from `inventory`; return the inventory used and the run."""
    _testhost("down")
    _testhost("up")
    _testhost("ssh-config")
    inventory = for_target(inventory, tmp)
    first = ibgw("provision", "local", "-i", str(inventory))
    assert first.returncode == 0, first.stdout + first.stderr
    return inventory, first


@pytest.fixture(scope="session", autouse=True)
def _stop_test_host_at_the_end():
    yield
    _testhost("down")


@pytest.fixture(scope="session")
def ssh_host():
    return testinfra.get_host("ssh://ibgw-testhost", ssh_config=str(SSH_CONFIG))
