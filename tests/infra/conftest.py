"""The disposable systemd host (tests/host/testhost.sh), provisioned for real over SSH.

Each test module gets a fresh boot (the rootfs is a volatile overlay) and
provisions it with the real `ibgw provision`; the host is stopped at the end.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import testinfra

ROOT = Path(__file__).resolve().parents[2]
TESTHOST = ROOT / "tests" / "host" / "testhost.sh"
SSH_CONFIG = ROOT / "build" / "testhost" / "ssh_config"
LOCAL = ROOT / "inventories" / "local.yml"


def ibgw(*args: str, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI, as a user would."""
    return subprocess.run([sys.executable, "-m", "ibgw_provision", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def recap(proc: subprocess.CompletedProcess, host: str = "local") -> dict[str, int]:
    """The PLAY RECAP row of one host: ok, changed, failed, round trips."""
    match = re.search(rf"^{host}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s", proc.stdout, flags=re.M)
    assert match, proc.stdout + proc.stderr
    return dict(zip(("ok", "changed", "failed", "round_trips"), map(int, match.groups())))


def _testhost(command: str) -> None:
    subprocess.run([str(TESTHOST), command], check=True, timeout=900, capture_output=True)


def fresh_host(inventory: Path) -> subprocess.CompletedProcess:
    """Boot a fresh test host and provision it from `inventory`; return the first run."""
    _testhost("down")
    _testhost("up")
    _testhost("ssh-config")
    first = ibgw("provision", "local", "-i", str(inventory))
    assert first.returncode == 0, first.stdout + first.stderr
    return first


@pytest.fixture(scope="session", autouse=True)
def _stop_test_host_at_the_end():
    yield
    subprocess.run([str(TESTHOST), "down"], timeout=120, capture_output=True)


@pytest.fixture(scope="session")
def ssh_host():
    return testinfra.get_host("ssh://ibgw-testhost", ssh_config=str(SSH_CONFIG))
