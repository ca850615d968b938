"""Provisioning gw right after its boot: apt waits for the dpkg lock, and Debian 13 and 12 converge.

Needs root (the lab fixture skips otherwise). Every address is the lab's (198.18.0.0/15).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

from ibgw_provision.provision import apply, wheelhouse
from tests.kit.lab import ROOT, read_env, run_lab

pytestmark = pytest.mark.lab
INVENTORY = ROOT / "inventories" / "lab.yml"
# Besides the lab's own boot unit (the lock for 20 s, as cloud-init does), hold the frontend lock
# for HOLD seconds as unattended-upgrades would: the run reaches apt within that, whatever it costs
# to connect and upload first.
HOLD = 30
HOLDER = textwrap.dedent(f"""
    import fcntl, os, time
    with open("/proc/self/comm", "w") as fh:
        fh.write("unattended-upgr")
    fd = os.open("/var/lib/dpkg/lock-frontend", os.O_RDWR | os.O_CREAT, 0o640)
    deadline = time.monotonic() + {HOLD}
    while time.monotonic() < deadline:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            time.sleep(0.2)
    time.sleep(max(0, deadline - time.monotonic()))
""")


def provision(*args: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "ibgw_provision", "provision", "gw", "-i", str(INVENTORY), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=ROOT)


def gather_wheels(lab) -> None:
    """The host's wheels, gathered before its boot, so the run itself reaches apt quickly."""
    code = (
        "import json, platform\n"
        "print(json.dumps([platform.python_version(), platform.libc_ver()[1], platform.machine()]))"
    )
    proc = lab.exec("gw", ["python3", "-c", code])
    assert proc.returncode == 0, proc.stderr
    wheelhouse.build(*json.loads(proc.stdout), apply.WHEELHOUSE_CACHE)


def converges_right_after_boot(lab, release: str) -> None:
    held = lab.ssh("sudo -n dpkg --configure -a")
    assert held.returncode == 2 and "dpkg frontend lock" in held.stderr, held.stderr
    lab.exec("gw", ["sh", "-c", f"setsid python3 -c '{HOLDER}' >/dev/null 2>&1 </dev/null &"])
    first = provision()  # not a terminal: one plain line per step
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    waits = re.findall(r"^\[gw\] waiting for the dpkg lock held by PID (\d+) \((.+)\)$", first.stdout, re.M)
    assert waits, first.stdout[-3000:]
    again = provision("--json")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    (host,) = json.loads(again.stdout)["hosts"]
    assert (host["status"], host["changed"], host["error"]) == ("ok", 0, None)
    version = lab.ssh("cat /etc/debian_version").stdout
    assert version.startswith("13." if release == "trixie" else "12."), version


def test_debian_13_provisioned_while_the_dpkg_lock_is_held(lab):
    assert lab.env["LAB_RELEASE"] == "trixie"
    gather_wheels(lab)
    lab.reset()
    converges_right_after_boot(lab, "trixie")


def test_debian_12_too(lab):
    release = lab.env["LAB_RELEASE"]
    proc = run_lab("--release", "bookworm", "reset", timeout=900)  # builds its rootfs once
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lab.env = read_env()
        gather_wheels(lab)
        proc = run_lab("--release", "bookworm", "reset", timeout=900)  # a fresh boot: the lock held again
        assert proc.returncode == 0, proc.stdout + proc.stderr
        converges_right_after_boot(lab, "bookworm")
    finally:
        back = run_lab("--release", release, "reset", timeout=900)
        lab.env = read_env()
    assert back.returncode == 0, back.stdout + back.stderr
