"""Every rendered file is accepted by the program that reads it, with no warning.

The programs come from Debian's packages (`make deps`). Two need a little of the
target host: logrotate resolves the `ibkr` user, and systemd-analyze checks that
each ExecStart exists. Both run in a private mount namespace (unshare -m) that
adds those, so this machine is never changed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ibgw_provision.provision import layout

VARIANTS = ["example", "example-nginx", "example-direct", "example-nginx-direct", "local", "lab"]


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    if not shutil.which(argv[0]):
        pytest.fail(f"{argv[0]} is not installed: run `make deps`")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


def _in_private_mounts(script: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.fail("these checks need root for unshare -m (CI and `make test` run as root)")
    return _run(["unshare", "--mount", "--propagation", "private", "sh", "-euc", script])


def _files(rendered, variant: str, pattern: str) -> list[Path]:
    return [p for path, p in rendered[variant].items() if re.search(pattern, path)]


@pytest.mark.parametrize("variant", ["example", "example-direct", "local", "lab"])
def test_haproxy_accepts_config(rendered, variant):
    (cfg,) = _files(rendered, variant, r"/haproxy\.cfg$")
    proc = _run(["haproxy", "-c", "-f", str(cfg)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Configuration file is valid" in proc.stdout
    assert "WARNING" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("variant", ["example-nginx", "example-nginx-direct"])
def test_nginx_accepts_stream_config(rendered, variant):
    (cfg,) = _files(rendered, variant, r"/nginx\.conf$")
    proc = _run(["nginx", "-t", "-c", str(cfg)])
    assert proc.returncode == 0, proc.stderr
    assert "syntax is ok" in proc.stderr
    assert "[warn]" not in proc.stderr


def _with_ibkr(tmp_path, script: str) -> subprocess.CompletedProcess:
    """`script` where the gateway user exists (as on a provisioned host), in private mounts."""
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text() + f"{layout.USER}:x:990:990::{layout.HOME}:/usr/sbin/nologin\n"
    )
    group.write_text(Path("/etc/group").read_text() + f"{layout.GROUP}:x:990:\n")
    return _in_private_mounts(f"""
        mount --bind {passwd} /etc/passwd
        mount --bind {group} /etc/group
        {script}""")


def test_nft_accepts_ruleset(rendered, tmp_path):
    (ruleset,) = _files(rendered, "example", r"/firewall\.nft$")
    proc = _with_ibkr(tmp_path, f"nft -c -f {ruleset}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout + proc.stderr == ""


@pytest.mark.parametrize("variant", VARIANTS)
def test_logrotate_accepts_config(rendered, variant, tmp_path):
    (cfg,) = _files(rendered, variant, r"/logrotate\.d/ibgw$")
    passwd, group = tmp_path / "passwd", tmp_path / "group"
    passwd.write_text(
        Path("/etc/passwd").read_text() + f"{layout.USER}:x:990:990::{layout.HOME}:/usr/sbin/nologin\n"
    )
    group.write_text(Path("/etc/group").read_text() + f"{layout.GROUP}:x:990:\n")
    proc = _in_private_mounts(f"""
        mount --bind {passwd} /etc/passwd
        mount --bind {group} /etc/group
        logrotate -d --state {tmp_path}/state {cfg}""")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert not re.search(r"^error:", output, flags=re.M), output
    assert f"Handling {len(re.findall(r'^/', cfg.read_text(), flags=re.M))} logs" in output


@pytest.mark.parametrize("variant", VARIANTS)
def test_systemd_analyze_verify_accepts_units(rendered, variant):
    units = _files(rendered, variant, r"\.service$")
    # What the provisioner installs under /opt (IBC, the ibgw venv) is not on
    # this machine: a tmpfs over /opt gets the real ibgw for the simulator
    # backend and an executable stand-in for IBC's script.
    commands = {m for u in units for m in re.findall(r"^Exec\w+=(\S+)", u.read_text(), flags=re.M)}
    provided = sorted(c for c in commands if c.startswith(layout.OPT + "/"))
    ibgw = str(Path(sys.executable).parent / "ibgw")
    setup = "".join(
        f"mkdir -p {shlex.quote(str(Path(c).parent))}\n"
        + (
            f"ln -s {shlex.quote(ibgw)} {shlex.quote(c)}\n"
            if c.endswith("/bin/ibgw")
            else f"printf '#!/bin/sh\\n' > {shlex.quote(c)}; chmod +x {shlex.quote(c)}\n"
        )
        for c in provided
    )
    proc = _in_private_mounts(
        f"mount -t tmpfs tmpfs /opt\n{setup}"
        f"systemd-analyze verify --man=no {' '.join(shlex.quote(str(u)) for u in units)}"
    )
    # verify exits 0 on unknown keys and bad values: any output is a finding.
    assert proc.returncode == 0 and proc.stdout + proc.stderr == "", proc.stdout + proc.stderr


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a misspelled directive is reported."""
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nExecStart=/bin/true\nRestartt=always\n")
    proc = _run(["systemd-analyze", "verify", "--man=no", str(unit)])
    assert "Unknown key 'Restartt'" in proc.stderr


MAX_EXPOSURE = 2.0  # the README lists the directives no unit can set, and why


def _exposure(unit: Path) -> float:
    """systemd-analyze's overall exposure score of a unit file, 0.0 (safe) .. 10.0 (unsafe)."""
    proc = _run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)])
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    return float(found.group(1))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_unit_is_sandboxed(rendered, variant):
    scores = {u.name: _exposure(u) for u in _files(rendered, variant, r"\.service$")}
    assert scores and max(scores.values()) <= MAX_EXPOSURE, scores


def test_exposure_check_can_fail(tmp_path):
    unit = tmp_path / "bare.service"
    unit.write_text("[Service]\nExecStart=/bin/true\n")
    assert _exposure(unit) > 9
