"""SSH safety, through the lab's bastion: host keys are verified by default (the bastion's and gw's);
failures are one clear line, exit 1."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path

import paramiko
import pytest
import yaml

from .conftest import GW, NAME, ibgw, recap, suite_doc

pytestmark = pytest.mark.lab
BASTION = "198.18.0.2"  # inventories/lab.yml's ssh.jump


@pytest.fixture(scope="module")
def pinned(lab) -> Path:
    """The lab's known_hosts (the bastion's key and gw's, pinned when the lab was built), on a fresh
    gw: no firewall yet, so a closed port is refused at once rather than dropped."""
    lab.reset()
    return Path(lab.env["LAB_KNOWN_HOSTS"])


def _inventory(tmp: Path, known_hosts, key: str | None = None, port: int = 22) -> Path:
    doc = suite_doc()
    ssh = doc["hosts"][NAME]["ssh"]
    ssh.update(known_hosts=str(known_hosts), port=port)
    if key:
        ssh["key"] = key
    path = tmp / "inv.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _check(inv, *flags, hosts: str = NAME) -> subprocess.CompletedProcess:
    proc = ibgw("provision", hosts, "-i", str(inv), "--check", *flags, timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def _line(known_hosts: Path, address: str) -> str:
    """The known_hosts line of one address."""
    (line,) = (line for line in known_hosts.read_text().splitlines() if line.split()[0] == address)
    return line + "\n"


@pytest.mark.parametrize("known", ["nothing", "the bastion"])
def test_unknown_host_key_is_refused_by_default(pinned, tmp_path, known):
    """Neither key known (refused at the bastion), or the bastion's only (refused at gw)."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("" if known == "nothing" else _line(pinned, BASTION))
    before = known_hosts.read_text()
    proc = _check(_inventory(tmp_path, known_hosts))
    assert proc.returncode == 1
    assert "unknown host key" in proc.stdout and "--accept-new-host-key" in proc.stdout
    assert (BASTION if known == "nothing" else GW) in proc.stdout, proc.stdout
    assert known_hosts.read_text() == before


def test_accept_new_trusts_first_contact_and_records_the_key(pinned, tmp_path):
    known = tmp_path / "known_hosts"
    proc = _check(_inventory(tmp_path, known), "--accept-new-host-key")
    assert proc.returncode == 0, proc.stdout
    for address in (BASTION, GW):  # the jump host's key and the target's
        recorded = paramiko.HostKeys(str(known)).lookup(address)
        assert (
            recorded
            and recorded["ssh-ed25519"] == paramiko.HostKeys(str(pinned)).lookup(address)["ssh-ed25519"]
        )
    # With the bastion known already: one line is appended, the rest of the file is left as it was.
    mine = "# the operator's own notes\n" + _line(pinned, BASTION)
    known.write_text(mine)
    proc = _check(_inventory(tmp_path, known), "--accept-new-host-key")
    assert proc.returncode == 0, proc.stdout
    text = known.read_text()
    assert text.startswith(mine) and len(text[len(mine) :].splitlines()) == 1
    assert (
        paramiko.HostKeys(str(known)).lookup(GW)["ssh-ed25519"]
        == paramiko.HostKeys(str(pinned)).lookup(GW)["ssh-ed25519"]
    )


def test_a_changed_host_key_is_refused_even_with_accept_new(pinned, tmp_path):
    """gw's key is not the one on record (the bastion's is): refused at gw, through the bastion."""
    known = tmp_path / "known_hosts"
    impostor = paramiko.Ed25519Key.from_private_key_file(suite_doc()["hosts"][NAME]["ssh"]["key"])  # not gw's
    keys = paramiko.HostKeys(str(pinned))
    keys.add(GW, "ssh-ed25519", impostor)
    keys.save(str(known))
    before = known.read_text()
    proc = _check(_inventory(tmp_path, known), "--accept-new-host-key")
    assert proc.returncode == 1
    assert "host key does not match" in proc.stdout
    assert known.read_text() == before


def test_unreachable_host_is_one_line_exit_1(pinned, tmp_path):
    """Nothing listens on gw's port 1: the bastion cannot open the forward."""
    proc = _check(_inventory(tmp_path, pinned, port=1))
    assert proc.returncode == 1
    assert "unreachable" in proc.stdout


def test_auth_failure_is_one_line_exit_1(pinned, tmp_path):
    stranger = tmp_path / "stranger"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(stranger))
    proc = _check(_inventory(tmp_path, pinned, key=str(stranger)))
    assert proc.returncode == 1
    assert "authentication failed with key" in proc.stdout


def test_one_hosts_failure_does_not_stop_the_others(pinned, tmp_path):
    doc = yaml.safe_load(_inventory(tmp_path, pinned).read_text())
    broken = copy.deepcopy(doc["hosts"][NAME])
    broken["ssh"]["port"] = 1
    doc["hosts"]["broken"] = broken
    both = tmp_path / "both.yml"
    both.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = _check(both, hosts="all")
    assert proc.returncode == 1
    gw = recap(proc, NAME)
    assert gw["failed"] == 0 and gw["ok"] + gw["changed"] > 0
    assert recap(proc, "broken")["unreachable"] == 1  # no SSH: unreachable, not failed (as Ansible)
    assert f"[broken] UNREACHABLE: admin@{GW}:1: unreachable" in proc.stdout
