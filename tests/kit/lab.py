"""The lab (tests/lab/lab) for tests: its nodes' addresses, `exec` on a node, SSH to gw.

The session fixture `lab` (registered in tests/conftest.py) brings the lab up, or reuses a
running one, and takes it down at the end if it started it. It skips unless run as root.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "lab" / "lab"
ENV = ROOT / "build" / "lab" / "lab.env"
NODES = ("operator", "bastion", "gw", "app-a", "app-b", "outsider")


def run_lab(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run tests/lab/lab; its output is kept for the failure message."""
    return subprocess.run([str(LAB), *args], capture_output=True, text=True, timeout=timeout)


def read_env(path: Path = ENV) -> dict[str, str]:
    """build/lab/lab.env: KEY=VALUE lines."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return dict(pairs)


@dataclass
class Lab:
    env: dict[str, str]

    @property
    def ssh_config(self) -> Path:
        return Path(self.env["LAB_SSH_CONFIG"])

    def addr(self, node: str) -> str:
        """The lab address of a node (operator, bastion, gw, app-a, app-b, outsider)."""
        return self.env["LAB_" + node.upper().replace("-", "_")]

    def exec(self, node: str, cmd: list[str] | str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run cmd as root on node (a string goes through sh -c); never raises on a failed command."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else cmd
        return run_lab("exec", node, *argv, timeout=timeout)

    def ssh(
        self,
        cmd: str,
        user: str = "admin",
        host: str = "lab-gw",
        timeout: float = 30,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Real OpenSSH with the lab's ssh_config (gw: through the bastion, pinned host keys)."""
        argv = ["ssh", "-F", str(self.ssh_config), "-l", user, host, cmd]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def connects(self, node: str, addr: str, port: int, timeout: float = 3) -> subprocess.CompletedProcess:
        """A TCP connect from node to addr:port; rc 0 if it connected, and stderr names the error."""
        code = f"import socket\nsocket.create_connection(({addr!r}, {port}), timeout={timeout})\n"
        return self.exec(node, ["python3", "-c", code], timeout=timeout + 10)

    def reset(self) -> None:
        """Reboot gw from its clean rootfs: a fresh host again."""
        proc = run_lab("reset", timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        self.env = read_env()


def lab_fixture():
    """Bring the lab up (or reuse a running one); take it down at the end if this started it."""
    if os.geteuid() != 0:
        pytest.skip("the lab needs root: network namespaces, systemd-nspawn, a bastion sshd")
    started = run_lab("status").returncode != 0
    if started:
        proc = run_lab("up", timeout=900)  # the first run builds the rootfs (about a minute)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    yield Lab(read_env())
    if started:
        proc = run_lab("down")
        assert proc.returncode == 0, proc.stdout + proc.stderr


lab = pytest.fixture(scope="session")(lab_fixture)
