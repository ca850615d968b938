"""Provisioning the lab's gw as a cloud host is reached: as `admin` through the bastion, with sudo.

Also: root's refusal in the host's words, a sudo password (-K) that no process list, journal or
output shows, a passphrase key, a @cert-authority line in known_hosts, ProxyJump from ssh_config,
and each broken variant as one line. Needs root and the lab (skipped otherwise).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ibgw_provision import inventory
from ibgw_provision.cli import main
from ibgw_provision.provision import apply, remote
from tests.kit.lab import ROOT

pytestmark = pytest.mark.lab
LAB_INVENTORY = ROOT / "inventories" / "lab.yml"
BUILD = ROOT / "build" / "lab"
NO_SSH_CONFIG = "/dev/null"  # the operator's own ~/.ssh/config must not change what is tested


def ibgw(*args: str, input: str | None = None, env: dict | None = None):
    """`ibgw` in this process; the result's output is stdout and stderr together."""
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


def one_line(output: str, prefix: str) -> str:
    """The single output line that starts with prefix."""
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, output
    return lines[0]


def lab_inventory(tmp: Path, **ssh) -> Path:
    """inventories/lab.yml with absolute paths and these `ssh:` keys changed (None removes one)."""
    raw = yaml.safe_load(LAB_INVENTORY.read_text())
    settings = raw["hosts"]["gw"]["ssh"]
    for key in ("key", "known_hosts"):
        settings[key] = str((LAB_INVENTORY.parent / settings[key]).resolve())
    for key, value in ssh.items():
        settings.pop(key) if value is None else settings.__setitem__(key, value)
    path = tmp / "lab.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def wait_for_dpkg(lab) -> None:
    """A fresh gw holds the dpkg lock for a while after boot, as a cloud image does."""
    deadline = time.monotonic() + 60
    while lab.ssh("sudo -n dpkg --configure -a").returncode != 0:
        assert time.monotonic() < deadline, "the dpkg lock was still held a minute after boot"
        time.sleep(1)


def count_on_gw(lab, pattern: str, since: str) -> int:
    proc = lab.exec("gw", f"journalctl --no-pager -o cat --since '{since}' | grep -c -- '{pattern}' || true")
    return int(proc.stdout.strip() or 0)


@pytest.fixture(scope="module")
def converged(lab):
    """gw provisioned from inventories/lab.yml: as admin, through the bastion."""
    wait_for_dpkg(lab)
    inv = inventory.load(LAB_INVENTORY)
    opts = apply.Options(ssh=remote.SshOptions(ssh_config=Path(NO_SSH_CONFIG)))
    report = apply.provision_host(inv, "gw", opts)
    assert report.failed is None, report.failed
    yield inv, opts
    lab.reset()  # a fresh gw again: its firewall now lets SSH in from the bastion only


def test_as_admin_through_the_bastion_gw_converges_and_a_rerun_is_one_command(lab, converged):
    inv, opts = converged
    time.sleep(1.1)  # journalctl's --since has a resolution of a second: nothing earlier counts
    since = lab.exec("gw", "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    report = apply.provision_host(inv, "gw", opts)
    changed = [f"{t.name} ({t.detail})" for t in report.tasks if t.changed]
    assert (report.failed, changed, report.round_trips) == (None, [], 1)
    assert count_on_gw(lab, "Accepted publickey for admin from 198.18.0.2", since) == 1  # via the bastion
    assert count_on_gw(lab, "COMMAND=", since) == 1  # one sudo: one command
    state = lab.ssh("systemctl is-active ibgw-gateway-paper ibgw-gate-paper haproxy ibgw-firewall")
    assert state.stdout.split() == ["active"] * 4, state.stdout + state.stderr


def test_a_refused_root_login_shows_the_hosts_message(lab, converged):
    result = ibgw(
        "provision", "gw", "-i", str(LAB_INVENTORY), "--ssh-config", NO_SSH_CONFIG, "--user", "root"
    )
    assert result.exit_code == 1, result.output
    assert one_line(result.output, "[gw] FAILED") == (
        '[gw] FAILED: gw: root login refused by the host: Please login as the user "admin" rather than '
        'the user "root".; set ssh.user in the inventory'
    )


def test_a_sudo_password_with_k_works_and_shows_nowhere(lab, converged):
    password = (BUILD / "opsuser-password").read_text().strip()
    lab.exec("gw", "chmod 0775 /var/log/ibgw")  # drift that only root can repair (and restarts nothing)
    since = lab.exec("gw", "date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    samples: list[str] = []
    done = threading.Event()

    def watch() -> None:
        for _ in range(2000):  # bounded: at most a few minutes of sampling
            if done.is_set():
                return
            samples.append(lab.exec("gw", ["ps", "-eo", "args"]).stdout)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    args = ("provision", "gw", "-i", str(LAB_INVENTORY), "--ssh-config", NO_SSH_CONFIG, "--user", "opsuser")
    try:
        result = ibgw(*args, "-K", input=password + "\n")
    finally:
        done.set()
        watcher.join(60)
    assert result.exit_code == 0, result.output
    assert "changed: dir /var/log/ibgw (mode 0775 -> 0755)" in result.output
    assert lab.exec("gw", "stat -c %a /var/log/ibgw").stdout.strip() == "755"
    assert any("sudo -S -p" in s for s in samples), "the watcher never saw the run's sudo"
    assert not [s for s in samples if password in s]
    journal = lab.exec("gw", f"journalctl --no-pager -o cat --since '{since}'").stdout
    assert "opsuser" in journal and password not in journal
    assert password not in result.output
    wrong = ibgw(*args, "-K", input="not-the-password\n")
    assert wrong.exit_code == 1
    assert (
        one_line(wrong.output, "[gw] FAILED")
        == "[gw] FAILED: gw: sudo refused the password given with -K for opsuser"
    )
    without = ibgw(*args)
    assert "sudo needs a password for opsuser: pass -K" in one_line(without.output, "[gw] FAILED")


def test_a_passphrase_key_from_the_environment(lab, converged, tmp_path):
    for name, given, ok in (("locked", "lab passphrase", True), ("locked-wrong", "not it", False)):
        key = tmp_path / name
        key.write_bytes((BUILD / "id_ed25519").read_bytes())
        key.chmod(0o600)
        subprocess.run(
            ["ssh-keygen", "-q", "-p", "-P", "", "-N", "lab passphrase", "-f", str(key)], check=True
        )
        inv = lab_inventory(tmp_path, key=str(key))
        result = ibgw("provision", "gw", "-i", str(inv), "--check", "--ssh-config", NO_SSH_CONFIG,
                      env={"IBGW_SSH_PASSPHRASE": given})  # fmt: skip
        if ok:
            assert result.exit_code == 0, result.output
        else:
            assert result.exit_code == 1
            assert (
                one_line(result.output, "[gw] UNREACHABLE")
                == f"[gw] UNREACHABLE: wrong passphrase for SSH key {key}"
            )


def test_a_cert_authority_line_in_known_hosts(lab, converged, tmp_path):
    ca = tmp_path / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)], check=True)
    authority = f"@cert-authority *.lab.example,198.18.0.* {(tmp_path / 'ca.pub').read_text().strip()}\n"
    pinned = (BUILD / "known_hosts").read_text()
    known = tmp_path / "known_hosts"
    known.write_text("# the lab, and a CA for its hosts\n" + authority + pinned)
    result = ibgw("provision", "gw", "-i", str(lab_inventory(tmp_path, known_hosts=str(known))), "--check",
                  "--ssh-config", NO_SSH_CONFIG)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert known.read_text() == "# the lab, and a CA for its hosts\n" + authority + pinned  # never rewritten
    only_ca = "".join(line + "\n" for line in pinned.splitlines() if not line.startswith("198.18.0.10 "))
    known.write_text(authority + only_ca)
    result = ibgw("provision", "gw", "-i", str(lab_inventory(tmp_path, known_hosts=str(known))), "--check",
                  "--ssh-config", NO_SSH_CONFIG)  # fmt: skip
    line = one_line(result.output, "[gw] UNREACHABLE")
    assert "admin@198.18.0.10:22:" in line and "host certificates are not supported" in line
    assert line.endswith("(via jump host 1 (root@198.18.0.2:22))")


def test_proxyjump_from_an_ssh_config_file(lab, converged, tmp_path):
    """The inventory names only the Host alias; ssh_config has the rest (as the lab writes it)."""
    raw = yaml.safe_load(LAB_INVENTORY.read_text())
    raw["hosts"]["gw"]["address"] = "lab-gw"
    raw["hosts"]["gw"]["ssh"] = {}
    inv = tmp_path / "alias.yml"
    inv.write_text(yaml.safe_dump(raw))
    config = BUILD / "ssh_config"
    result = ibgw("provision", "gw", "-i", str(inv), "--check", "--ssh-config", str(config))
    assert result.exit_code == 0, result.output
    broken = tmp_path / "ssh_config"
    broken.write_text(config.read_text().replace("HostName 198.18.0.2", "HostName 198.18.0.2\n  Port 2222"))
    result = ibgw("provision", "gw", "-i", str(inv), "--check", "--ssh-config", str(broken))
    assert result.exit_code == 1
    assert one_line(result.output, "[gw] UNREACHABLE").startswith(
        "[gw] UNREACHABLE: jump host 1 (root@198.18.0.2:2222): unreachable: "
    )
