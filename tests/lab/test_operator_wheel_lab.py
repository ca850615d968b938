"""An operator who installed ibgw with `pip install` of its built wheel, and has no source tree,
provisions the lab's gw (a gate and the simulator, which ship ibgw itself to the host).

Needs root and the lab (skipped otherwise). The wheel build and the venv are bounded by their
subprocess timeouts; gw is left fresh again at the end, as every lab module leaves it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.kit.lab import ROOT
from tests.lab.test_provision_lab import NO_SSH_CONFIG, lab_inventory

pytestmark = pytest.mark.lab


def run(argv: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def operator(tmp_path_factory) -> tuple[Path, Path]:
    """A venv outside the source tree with ibgw installed from its built wheel, as `pip install` does."""
    root = tmp_path_factory.mktemp("operator")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", ROOT], 600)
    (wheel,) = (root / "dist").glob("ibgw_provision-*.whl")
    run([sys.executable, "-m", "venv", root / "venv"], 120)
    run([root / "venv/bin/pip", "install", "-q", wheel], 600)
    return root, wheel


def test_an_operator_venv_from_the_built_wheel_provisions_gw(lab, operator, tmp_path):
    root, wheel = operator
    inventory = lab_inventory(tmp_path)
    argv = [
        root / "venv/bin/ibgw",
        "provision",
        "gw",
        "-i",
        inventory,
        "--json",
        "--ssh-config",
        NO_SSH_CONFIG,
    ]
    try:
        first = run(argv, 900, cwd=root)  # no source tree here, nor on its import path
        (host,) = json.loads(first.stdout)["hosts"]
        assert (host["status"], host["error"]) == ("changed", None) and host["changed"] > 0
        (venv,) = [t for t in host["tasks"] if t["name"] == "venv /opt/ibgw/venv"]
        assert venv["changed"] and "ibgw-provision==" in venv["detail"]
        # gw runs the very files of the operator's wheel: compare one module, byte for byte.
        with zipfile.ZipFile(wheel) as zf:
            shipped = zf.read("ibgw_provision/gate/policy.py").decode()
        found = lab.ssh(
            "sudo -n sh -c 'cat /opt/ibgw/venv/lib/python3*/site-packages/ibgw_provision/gate/policy.py'"
        )
        assert found.returncode == 0 and found.stdout == shipped, found.stderr
        state = lab.ssh("systemctl is-active ibgw-gate-paper ibgw-gate-live haproxy ibgw-firewall")
        assert state.stdout.split() == ["active"] * 4, state.stdout + state.stderr
        again = run(argv, 300, cwd=root)
        (host,) = json.loads(again.stdout)["hosts"]
        assert (host["changed"], host["round_trips"]) == (0, 1)
    finally:
        lab.reset()  # a fresh gw for the next module
