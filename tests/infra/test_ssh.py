"""SSH safety: host keys are verified by default; failures are one clear line, exit 1."""

from __future__ import annotations

import subprocess

import paramiko
import pytest

from .conftest import LOCAL, SSH_DIR, _testhost, ibgw, recap

KNOWN_HOSTS = SSH_DIR / "known_hosts"
KEY = SSH_DIR / "id_ed25519"


@pytest.fixture(scope="module", autouse=True)
def _host_up():
    _testhost("up")
    _testhost("ssh-config")


def _inventory(tmp_path, known_hosts, key=KEY, port=2222):
    text = LOCAL.read_text()
    text = text.replace("../build/testhost/known_hosts", str(known_hosts))
    text = text.replace("../build/testhost/id_ed25519", str(key)).replace("port: 2222", f"port: {port}")
    path = tmp_path / "inv.yml"
    path.write_text(text)
    return path


def _check(inv, *flags, hosts: str = "local") -> subprocess.CompletedProcess:
    proc = ibgw("provision", hosts, "-i", str(inv), "--check", *flags, timeout=120)
    assert "Traceback" not in proc.stdout + proc.stderr
    return proc


def test_unknown_host_key_is_refused_by_default(tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    proc = _check(_inventory(tmp_path, known))
    assert proc.returncode == 1
    assert "unknown host key" in proc.stdout and "--accept-new-host-key" in proc.stdout
    assert known.read_text() == ""


def test_accept_new_trusts_first_contact_and_records_the_key(tmp_path):
    known = tmp_path / "known_hosts"
    proc = _check(_inventory(tmp_path, known), "--accept-new-host-key")
    assert proc.returncode == 0, proc.stdout
    recorded = paramiko.HostKeys(str(known)).lookup("[127.0.0.1]:2222")
    pinned = paramiko.HostKeys(str(KNOWN_HOSTS)).lookup("[127.0.0.1]:2222")
    assert recorded and recorded["ssh-ed25519"] == pinned["ssh-ed25519"]


def test_a_changed_host_key_is_refused_even_with_accept_new(tmp_path):
    known = tmp_path / "known_hosts"
    impostor = paramiko.Ed25519Key.from_private_key_file(str(KEY))  # any ed25519 key but the host's
    keys = paramiko.HostKeys()
    keys.add("[127.0.0.1]:2222", "ssh-ed25519", impostor)
    keys.save(str(known))
    proc = _check(_inventory(tmp_path, known), "--accept-new-host-key")
    assert proc.returncode == 1
    assert "host key does not match" in proc.stdout


def test_unreachable_host_is_one_line_exit_1(tmp_path):
    proc = _check(_inventory(tmp_path, KNOWN_HOSTS, port=1))
    assert proc.returncode == 1
    assert "unreachable" in proc.stdout


def test_auth_failure_is_one_line_exit_1(tmp_path):
    stranger = tmp_path / "stranger"
    paramiko.RSAKey.generate(2048).write_private_key_file(str(stranger))
    proc = _check(_inventory(tmp_path, KNOWN_HOSTS, key=stranger))
    assert proc.returncode == 1
    assert "authentication failed with key" in proc.stdout


def test_one_hosts_failure_does_not_stop_the_others(tmp_path):
    text = _inventory(tmp_path, KNOWN_HOSTS).read_text()
    host = text.split("hosts:\n", 1)[1]
    broken = host.replace("  local:\n", "  broken:\n", 1).replace("port: 2222", "port: 1")
    both = tmp_path / "both.yml"
    both.write_text(text.split("hosts:\n", 1)[0] + "hosts:\n" + host + broken)
    proc = _check(both, hosts="all")
    assert proc.returncode == 1
    local = recap(proc, "local")
    assert local["failed"] == 0 and local["ok"] + local["changed"] > 0
    assert recap(proc, "broken")["unreachable"] == 1  # no SSH: unreachable, not failed (as Ansible)
    assert "[broken] UNREACHABLE: root@127.0.0.1:1: unreachable" in proc.stdout
