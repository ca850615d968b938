"""The host agent, run in a temporary directory: real files, real modes and owners, and fake
system tools (systemctl, apt-get, dpkg-query, ...) placed first in PATH that record their argv.

The agent takes every path from its request, so no test touches /etc or /opt.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import http.server
import io
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from ibgw_provision.provision import agent
from ibgw_provision.provision.plan import VALIDATORS
from ibgw_provision.provision.remote import BOOT, agent_stdin

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="chown to another user needs root")
NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrgid(NOBODY.pw_gid).gr_name
ME, MY_GROUP = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name


class FakeBin:
    """Executables first in PATH; each appends its name and argv to one log, then runs `body`."""

    def __init__(self, root: Path, monkeypatch):
        self.dir, self.log = root / "fakebin", root / "calls.log"
        self.dir.mkdir()
        self.log.touch()
        monkeypatch.setenv("PATH", f"{self.dir}{os.pathsep}{os.environ['PATH']}")

    def add(self, name: str, body: str = "", rc: int = 0) -> None:
        script = self.dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{self.log}"\n{body}\nexit {rc}\n')
        script.chmod(0o755)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def fakebin(tmp_path, monkeypatch):
    return FakeBin(tmp_path, monkeypatch)


@pytest.fixture
def systemd(fakebin, tmp_path, monkeypatch):
    """A fake systemctl over a directory of unit states: `start`/`restart` make a unit active unless
    it is listed in `dies`; is-active/is-enabled/show answer from that state."""
    state = tmp_path / "units"
    state.mkdir()
    (state / "dies").touch()
    fakebin.add(
        "systemctl",
        f"""
S="{state}"
case "$1" in
  is-active) cat "$S/$2.active" 2>/dev/null || {{ echo inactive; exit 3; }} ;;
  is-enabled) cat "$S/$2.enabled" 2>/dev/null || {{ echo disabled; exit 1; }} ;;
  enable) shift; for u in "$@"; do echo enabled > "$S/$u.enabled"; done ;;
  start|restart) grep -qx "$2" "$S/dies" && echo failed > "$S/$2.active" || echo active > "$S/$2.active" ;;
  show) echo "ActiveState=$(cat "$S/$2.active" 2>/dev/null || echo inactive)"; echo SubState=running
        echo NRestarts=2; echo ActiveEnterTimestampMonotonic=5000000; echo Result=success ;;
esac""",
    )
    fakebin.add("journalctl", 'echo "boom: cannot bind"')
    real = agent.stays_up
    monkeypatch.setattr(agent, "stays_up", lambda units: real(units, seconds=0.05))
    return state


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def file_step(path: Path, content: str, mode: int = 0o640, owner: str = ME, group: str = MY_GROUP, **extra):
    return {
        "kind": "file",
        "task": f"file {path}",
        "path": str(path),
        "content": b64(content),
        "mode": mode,
        "owner": owner,
        "group": group,
        **extra,
    }


def events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith(".ibgw-")]


def plant_link(link: Path, target: Path) -> None:
    """A symlink as the ibkr user would plant it: owned by someone other than root."""
    link.symlink_to(target)
    if AS_ROOT:
        os.lchown(link, NOBODY.pw_uid, NOBODY.pw_gid)


# ---- facts ---------------------------------------------------------------


def test_facts_reads_packages_user_paths_units_and_markers(tmp_path, fakebin, systemd):
    fakebin.add("dpkg-query", 'echo "haproxy installed"; echo "nginx config-files"', rc=1)
    fakebin.add("nft", rc=0)
    (systemd / "a.service.active").write_text("active\n")
    (systemd / "a.service.enabled").write_text("enabled\n")
    same, drifted, folder = tmp_path / "same.cfg", tmp_path / "drifted.cfg", tmp_path / "dir"
    same.write_text("want\n")
    drifted.write_text("old\n")
    folder.mkdir(mode=0o750)
    folder.chmod(0o750)
    (tmp_path / "link").symlink_to(same)
    marker = tmp_path / "stamp"
    marker.write_text("abc")
    want = hashlib.sha256(b"want\n").hexdigest()
    req = {
        "packages": ["haproxy", "nginx", "nftables"],
        "user": "root",
        "paths": [str(p) for p in (same, drifted, folder, tmp_path / "link", tmp_path / "missing")],
        "content_unless": {str(same): want, str(drifted): want, str(tmp_path / "missing"): want},
        "units": ["a.service", "b.service"],
        "markers": [str(marker), str(tmp_path / "nomarker")],
        "firewall": True,
    }

    got = agent.facts(req)

    assert got["packages"] == {"haproxy": True, "nginx": False, "nftables": False}
    assert got["user"]["uid"] == 0 and "root" in got["user"]["groups"]
    assert got["paths"][str(same)] == {
        "kind": "file",
        "mode": same.stat().st_mode & 0o7777,
        "owner": ME,
        "group": MY_GROUP,
        "sha256": want,
    }
    assert got["paths"][str(folder)]["kind"] == "dir" and got["paths"][str(folder)]["mode"] == 0o750
    assert got["paths"][str(folder)]["sha256"] is None
    assert got["paths"][str(tmp_path / "link")]["kind"] == "link"
    assert got["paths"][str(tmp_path / "link")]["sha256"] is None  # never hashed through the link
    assert got["paths"][str(tmp_path / "missing")] is None
    assert got["content"] == {str(drifted): "old\n"}  # only what drifted is sent back
    assert got["units"] == {
        "a.service": {"enabled": "enabled", "active": "active"},
        "b.service": {"enabled": "disabled", "active": "inactive"},
    }
    assert got["markers"] == {str(marker): "abc", str(tmp_path / "nomarker"): None}
    assert got["firewall"] is True
    assert got["python"] == ".".join(map(str, sys.version_info[:3]))
    assert fakebin.calls()[:2] == [
        "dpkg-query -W -f ${Package} ${db:Status-Status}",
        " haproxy nginx nftables",
    ]


def test_facts_without_packages_user_or_firewall(tmp_path, fakebin):
    fakebin.add("dpkg-query", rc=99)  # must not be asked
    got = agent.facts({"packages": [], "user": "ibgw-no-such-user", "paths": [], "units": [], "markers": []})
    assert got["packages"] == {} and got["user"] is None and got["firewall"] is None
    assert fakebin.calls() == []


def test_firewall_loaded_is_false_when_the_table_is_gone_or_nft_missing(tmp_path, fakebin, monkeypatch):
    fakebin.add("nft", rc=1)
    assert agent.firewall_loaded() is False
    assert fakebin.calls() == ["nft list table inet ibgw"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # nftables not installed yet
    assert agent.firewall_loaded() is False


@needs_root
def test_stat_names_owner_and_group_or_their_ids(tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(path, 0o4750)
    got = agent.stat(str(path))
    assert (got["owner"], got["group"], got["mode"]) == ("nobody", NOGROUP, 0o4750)
    os.chown(path, 54321, 54322)  # ids with no name on this host
    assert (agent.stat(str(path))["owner"], agent.stat(str(path))["group"]) == ("54321", "54322")


def test_reads_never_follow_a_symlink_nor_block_on_a_fifo(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:hash\n")
    (tmp_path / "marker").symlink_to(secret)
    os.mkfifo(tmp_path / "fifo")
    got = {}

    def read_all():
        got["values"] = [agent.read(str(tmp_path / name)) for name in ("marker", "fifo")]
        got["hashes"] = [agent.sha256_of(str(tmp_path / name)) for name in ("marker", "fifo")]

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(5)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert got == {"values": [None, None], "hashes": [None, None]}
    assert agent.sha256_of(str(tmp_path)) is None  # a directory
    assert agent.stat(str(tmp_path / "fifo"))["sha256"] is None


def test_read_and_hash_report_other_errors(tmp_path):
    long_name = tmp_path / ("x" * 300)  # ENAMETOOLONG: not a reason to pretend the file is absent
    with pytest.raises(OSError):
        agent.read(str(long_name))
    with pytest.raises(OSError):
        agent.sha256_of(str(long_name))


# ---- file writes ---------------------------------------------------------


@needs_root
def test_file_is_written_with_its_content_mode_and_owner(tmp_path):
    path = tmp_path / "etc" / "ibgw" / "live" / "config.ini"  # parents are created
    agent.step_file(file_step(path, "IbLoginId=x\n", 0o640, "nobody", NOGROUP))
    st = path.stat()
    assert path.read_text() == "IbLoginId=x\n"
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, NOBODY.pw_uid, NOBODY.pw_gid)
    assert leftovers(path.parent) == []


def test_file_is_replaced_atomically(tmp_path):
    path = tmp_path / "haproxy.cfg"
    path.write_text("old\n")
    before = path.stat().st_ino
    with open(path) as reader:  # a reader of the old file keeps a whole old file
        agent.step_file(file_step(path, "new\n", 0o644))
        assert reader.read() == "old\n"
    assert path.read_text() == "new\n" and path.stat().st_ino != before
    assert path.stat().st_mode & 0o7777 == 0o644
    assert leftovers(tmp_path) == []


def test_file_content_is_exact_bytes(tmp_path):
    path = tmp_path / "jts.ini"
    content = "[IBGateway]\r\nLocale=de\u00e4\n\n"
    agent.step_file(file_step(path, content, 0o600))
    assert path.read_bytes() == content.encode()


def test_validator_sees_the_new_file_before_it_replaces_the_old(tmp_path, fakebin):
    seen = tmp_path / "seen"
    fakebin.add("haproxy", f'cp "$3" "{seen}"; stat -c %a "$3" > "{seen}.mode"')
    path = tmp_path / "haproxy.cfg"
    path.write_text("old\n")
    agent.step_file(file_step(path, "new\n", 0o644, validate=["haproxy", "-c", "-f", "{}"]))
    assert seen.read_text() == "new\n" and path.read_text() == "new\n"
    assert (tmp_path / "seen.mode").read_text().strip() == "644"  # attributes are set before the check
    (call,) = fakebin.calls()
    assert call.startswith(f"haproxy -c -f {tmp_path}/.ibgw-")  # a temporary beside the target
    assert leftovers(tmp_path) == []


def test_a_failing_validator_leaves_the_old_file(tmp_path, fakebin):
    fakebin.add("nginx", 'echo "nginx: [emerg] unknown directive \\"strem\\"" >&2', rc=1)
    path = tmp_path / "nginx.conf"
    path.write_text("old\n")
    path.chmod(0o644)
    with pytest.raises(agent.StepError) as failed:
        agent.step_file(file_step(path, "strem {}\n", 0o600, validate=["nginx", "-t", "-c", "{}"]))
    assert "exited 1" in str(failed.value) and 'unknown directive "strem"' in str(failed.value)
    assert path.read_text() == "old\n" and path.stat().st_mode & 0o7777 == 0o644
    assert leftovers(tmp_path) == []


BROKEN = {  # per validated file: a broken version, and what its validator must say about it
    "haproxy.cfg": ("global\n    maxconnn 100\n", "unknown keyword 'maxconnn' in 'global' section"),
    "nginx.conf": ("events {}\nstrem {}\n", 'unknown directive "strem"'),
    "firewall.nft": (
        "table inet ibgw {\n  chain input { type filter hook input priority 0; polcy drop; }\n}\n",
        "syntax error",
    ),
}


@pytest.mark.parametrize("target", sorted(VALIDATORS))
def test_the_real_validators_refuse_a_broken_file_and_say_why(tmp_path, target):
    argv = VALIDATORS[target]
    if not shutil.which(argv[0]):
        pytest.skip(f"{argv[0]} is not installed")
    path = tmp_path / os.path.basename(target)
    path.write_text("old\n")
    broken, reason = BROKEN[path.name]
    with pytest.raises(agent.StepError) as failed:
        agent.step_file(file_step(path, broken, validate=argv))
    assert reason in str(failed.value)
    assert path.read_text() == "old\n" and leftovers(tmp_path) == []


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is not installed")
def test_a_config_the_real_validator_accepts_replaces_the_old(tmp_path):
    path = tmp_path / "haproxy.cfg"
    good = (
        "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\nlisten paper\n    bind 127.0.0.1:14004\n    server gw 127.0.0.1:14002\n"
    )
    agent.step_file(file_step(path, good, validate=VALIDATORS["/etc/haproxy/haproxy.cfg"]))
    assert path.read_text() == good


def test_a_missing_validator_program_leaves_the_old_file(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path = tmp_path / "firewall.nft"
    path.write_text("old\n")
    with pytest.raises(OSError):
        agent.step_file(file_step(path, "new\n", validate=["nft", "-c", "-f", "{}"]))
    assert path.read_text() == "old\n" and leftovers(tmp_path) == []


def test_unknown_owner_fails_before_anything_is_replaced(tmp_path):
    path = tmp_path / "f"
    path.write_text("old\n")
    with pytest.raises(KeyError):
        agent.step_file(file_step(path, "new\n", owner="ibgw-no-such-user"))
    assert path.read_text() == "old\n" and leftovers(tmp_path) == []


def test_ini_step_stops_the_owning_unit_before_it_merges_the_file(tmp_path, fakebin):
    """IB Gateway rewrites jts.ini on exit: it is stopped first, so our keys are not overwritten."""
    jts = tmp_path / "jts.ini"
    jts.write_text("[IBGateway]\nApiOnly=false\nWriteDebug=false\n")
    fakebin.add("systemctl", f'cat "{jts}" > "{tmp_path}/at-stop"')
    step = file_step(jts, "", 0o600) | {
        "kind": "ini",
        "stop": ["ibgw-gateway-live.service"],
        "values": {"IBGateway": {"ApiOnly": "true"}},
        "seed": b64("[IBGateway]\n"),
    }
    agent.step_ini(step)
    assert fakebin.calls() == ["systemctl stop ibgw-gateway-live.service"]
    assert (tmp_path / "at-stop").read_text() == "[IBGateway]\nApiOnly=false\nWriteDebug=false\n"
    assert jts.read_text() == "[IBGateway]\nApiOnly=true\nWriteDebug=false\n"
    assert jts.stat().st_mode & 0o7777 == 0o600


# ---- symlink safety ----------------------------------------------------------


def test_a_symlink_at_the_target_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    victim.chmod(0o600)
    path = tmp_path / "jts.ini"
    plant_link(path, victim)
    agent.step_file(file_step(path, "ours\n", 0o644))
    assert not path.is_symlink() and path.read_text() == "ours\n"
    assert victim.read_text() == "keep\n" and victim.stat().st_mode & 0o7777 == 0o600


@pytest.mark.parametrize("kind", ["attrs", "dir"])
def test_attrs_never_follow_a_symlink(tmp_path, kind):
    victim = tmp_path / "victim"
    victim.mkdir() if kind == "dir" else victim.write_text("keep\n")
    victim.chmod(0o700)
    path = tmp_path / "managed"
    plant_link(path, victim)
    step = {"kind": kind, "task": "t", "path": str(path), "owner": ME, "group": MY_GROUP, "mode": 0o777}
    with pytest.raises(OSError):
        agent.STEPS[kind](step)
    assert victim.stat().st_mode & 0o7777 == 0o700 and path.is_symlink()


def test_attrs_refuse_a_fifo(tmp_path):
    os.mkfifo(tmp_path / "fifo", 0o600)
    step = {
        "kind": "attrs",
        "task": "t",
        "path": str(tmp_path / "fifo"),
        "owner": ME,
        "group": MY_GROUP,
        "mode": 0o666,
    }
    with pytest.raises(agent.StepError, match="not a regular file"):
        agent.step_attrs(step)
    assert (tmp_path / "fifo").stat().st_mode & 0o7777 == 0o600


@needs_root
@pytest.mark.parametrize("kind", ["file", "ini", "dir", "attrs"])
def test_a_symlink_planted_in_a_parent_is_not_followed(tmp_path, kind):
    """The ibkr user owns /var/lib/ibgw: it could swap a managed directory for a link to /etc."""
    victim, home = tmp_path / "etc", tmp_path / "home"
    victim.mkdir()
    home.mkdir()
    (victim / "jts.ini").write_text("keep\n")
    plant_link(home / "live", victim)
    path = home / "live" / ("jts.ini" if kind != "dir" else "sub")
    ini = {"seed": b64("ours\n"), "values": {"IBGateway": {"ApiOnly": "true"}}}
    step = (
        file_step(path, "ours\n", 0o777, "nobody", NOGROUP) | {"kind": kind} | (ini if kind == "ini" else {})
    )
    with pytest.raises(agent.StepError, match="symlink"):
        agent.STEPS[kind](step)
    assert sorted(p.name for p in victim.iterdir()) == ["jts.ini"]
    assert (victim / "jts.ini").read_text() == "keep\n" and (victim / "jts.ini").stat().st_uid == 0


@needs_root
def test_a_symlinked_parent_root_made_is_followed(tmp_path):
    """An operator may link /opt to a bigger disk: only links someone else owns are refused."""
    disk = tmp_path / "disk"
    disk.mkdir()
    (tmp_path / "opt").symlink_to(disk)
    agent.step_file(file_step(tmp_path / "opt" / "f", "ours\n"))
    assert (disk / "f").read_text() == "ours\n"


# ---- directories, users, packages -------------------------------------------


@needs_root
def test_dir_is_created_or_fixed(tmp_path):
    path = tmp_path / "var" / "lib" / "ibgw"
    step = {
        "kind": "dir",
        "task": "t",
        "path": str(path),
        "owner": "nobody",
        "group": NOGROUP,
        "mode": 0o2750,
    }
    agent.step_dir(step)
    st = path.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o2750, NOBODY.pw_uid, NOBODY.pw_gid)
    path.chmod(0o777)
    agent.step_dir(step | {"owner": "root", "group": "root"})  # chown then chmod: the mode survives chown
    st = path.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o2750, 0, 0)


@pytest.fixture
def no_dpkg_locks(tmp_path, monkeypatch):
    """The dpkg lock files, in a temporary directory: never this machine's (test_os_support waits on them)."""
    monkeypatch.setattr(agent, "DPKG_LOCKS", tuple(str(tmp_path / n) for n in ("lock-frontend", "lock")))


def apt_calls(fakebin) -> list[str]:
    """apt-get's argv, with the lock timeout apt is given (what is left of 300 s) shown as N."""
    return [re.sub(r"DPkg::Lock::Timeout=(29\d|300) ", "DPkg::Lock::Timeout=N ", c) for c in fakebin.calls()]


def test_apt_installs_without_questions(fakebin, no_dpkg_locks):
    fakebin.add("apt-get", 'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> "$0.env"')
    agent.step_apt({"task": "install haproxy xvfb", "packages": ["haproxy", "xvfb"]})
    assert apt_calls(fakebin) == [
        "apt-get -o DPkg::Lock::Timeout=N update -qq",
        "apt-get -o DPkg::Lock::Timeout=N install -y -qq --no-install-recommends haproxy xvfb",
    ]
    assert (fakebin.dir / "apt-get.env").read_text() == "DEBIAN_FRONTEND=noninteractive\n" * 2


def test_apt_failure_names_the_command_and_its_error(fakebin, no_dpkg_locks):
    fakebin.add(
        "apt-get", 'echo "E: Unable to locate package xvfbb" >&2; [ "$3" = update ] && exit 0', rc=100
    )
    with pytest.raises(agent.StepError) as failed:
        agent.step_apt({"task": "install xvfbb", "packages": ["xvfbb"]})
    assert re.sub(r"Timeout=\d+", "Timeout=N", str(failed.value)) == (
        "apt-get -o DPkg::Lock::Timeout=N install -y -qq --no-install-recommends xvfbb exited 100: "
        "E: Unable to locate package xvfbb"
    )


def test_user_is_created_as_a_system_user_without_login(fakebin, tmp_path, monkeypatch):
    accounts = tmp_path / "passwd"  # the host's user database, as the fake useradd leaves it
    fakebin.add("useradd", f'for last; do :; done; echo "$last" >> "{accounts}"')
    fakebin.add("gpasswd")
    monkeypatch.setattr(
        agent,
        "user",
        lambda name: (
            {"groups": [name]} if accounts.exists() and name in accounts.read_text().split() else None
        ),
    )
    agent.step_user({"name": "ibkr", "home": "/var/lib/ibgw"})
    assert fakebin.calls() == [
        "useradd --system --user-group --home-dir /var/lib/ibgw --no-create-home "
        "--shell /usr/sbin/nologin ibkr"
    ]
    agent.step_user({"name": "ibkr", "home": "/var/lib/ibgw"})  # it exists now: nothing to do
    assert len(fakebin.calls()) == 1


def test_user_is_removed_from_every_privileged_group(fakebin):
    fakebin.add("useradd", rc=1)  # root exists: never called
    fakebin.add("gpasswd")
    agent.step_user({"name": "root", "home": "/root"})
    expected = {f"gpasswd -d root {g}" for g in agent.user("root")["groups"] if g in agent.PRIVILEGED_GROUPS}
    assert "gpasswd -d root root" in expected and set(fakebin.calls()) == expected


def test_user_without_privileged_groups_is_left_alone(fakebin):
    fakebin.add("gpasswd", rc=1)
    agent.step_user({"name": "nobody", "home": "/nonexistent"})
    assert fakebin.calls() == []


# ---- installs and their stamps ---------------------------------------------


def zip_upload(tmp_path: Path) -> tuple[Path, str]:
    upload = tmp_path / "uploads" / "IBCLinux-3.20.0.zip"
    upload.parent.mkdir()
    with zipfile.ZipFile(upload, "w") as z:
        z.writestr("scripts/ibcstart.sh", "#!/bin/sh\n")
        z.writestr("config.ini", "x=1\n")
    return upload, hashlib.sha256(upload.read_bytes()).hexdigest()


def install_step(upload: Path, sha: str, dest: Path, kind: str = "zip") -> dict:
    return {
        "upload": str(upload),
        "sha256": sha,
        "type": kind,
        "dest": str(dest),
        "base": str(dest.parent),
        "owner": "nobody" if AS_ROOT else ME,
        "stamp": ".ibgw-installed",
    }


def test_zip_install_replaces_the_dest_and_writes_the_stamp_last(tmp_path):
    upload, sha = zip_upload(tmp_path)
    dest = tmp_path / "opt" / "ibc"
    dest.mkdir(parents=True)
    (dest / "stale").write_text("from the old version")
    agent.step_install(install_step(upload, sha, dest))
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        ".ibgw-installed",
        "config.ini",
        "scripts",
        "scripts/ibcstart.sh",
    ]
    assert (dest / "scripts" / "ibcstart.sh").stat().st_mode & 0o777 == 0o755
    assert (dest / ".ibgw-installed").read_text() == sha
    if AS_ROOT:
        assert {p.stat().st_uid for p in [dest, *dest.rglob("*")] if p.name != ".ibgw-installed"} == {
            NOBODY.pw_uid
        }


def test_install_refuses_an_upload_whose_sha256_differs(tmp_path):
    upload, sha = zip_upload(tmp_path)
    dest = tmp_path / "ibc"
    dest.mkdir()
    (dest / "kept").write_text("x")
    with pytest.raises(agent.StepError, match="sha256 differs"):
        agent.step_install(install_step(upload, "0" * 64, dest))
    assert [p.name for p in dest.iterdir()] == ["kept"]


def test_install_refuses_an_upload_that_is_a_symlink(tmp_path):
    upload, sha = zip_upload(tmp_path)
    link = tmp_path / "uploads" / "link.zip"
    link.symlink_to(upload)
    with pytest.raises(agent.StepError, match="sha256 differs"):
        agent.step_install(install_step(link, sha, tmp_path / "ibc"))
    assert not (tmp_path / "ibc").exists()


@pytest.mark.parametrize(
    "dest",
    ["{base}/..", "{base}/.", "{base}", "{base}/../ibc-2", "{base}/v/../..", "{base}/link", "ibc/3.20.0"],
)
def test_install_refuses_a_dest_not_strictly_inside_its_base(tmp_path, monkeypatch, dest):
    """An artifact version of `..` once made provisioning delete /opt/ibgw (issue 13)."""
    monkeypatch.chdir(tmp_path)  # for the relative dest
    upload, sha = zip_upload(tmp_path)
    opt = tmp_path / "opt"
    base = opt / "ibc"
    base.mkdir(parents=True)
    (opt / "keep").write_text("not ibgw's to delete")
    (base / "link").symlink_to(opt)
    step = install_step(upload, sha, base) | {"dest": dest.format(base=base), "base": str(base)}
    with pytest.raises(agent.StepError, match="not strictly inside"):
        agent.step_install(step)
    assert (opt / "keep").exists() and (base / "link").is_symlink()


def test_installer_runs_and_links_it_makes_are_not_followed_by_chown(tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("root's\n")
    installer = tmp_path / "ibgateway-10.30-standalone-linux-x64.sh"
    installer.write_text(
        '[ "$1" = -q ] && [ "$2" = -dir ] || exit 9\n'
        f'mkdir -p "$3/jars" && echo jar > "$3/jars/a.jar" && ln -s "{outside}" "$3/link"\n'
    )
    sha = hashlib.sha256(installer.read_bytes()).hexdigest()
    dest = tmp_path / "gateway-live"
    agent.step_install(install_step(installer, sha, dest, kind="sh"))
    assert (dest / "jars" / "a.jar").read_text() == "jar\n" and (dest / ".ibgw-installed").read_text() == sha
    assert outside.stat().st_uid == os.geteuid()
    if AS_ROOT:
        assert os.lstat(dest / "link").st_uid == NOBODY.pw_uid


def test_a_failing_installer_leaves_no_stamp(tmp_path):
    installer = tmp_path / "broken.sh"
    installer.write_text('echo "no space left" >&2; exit 3\n')
    sha = hashlib.sha256(installer.read_bytes()).hexdigest()
    dest = tmp_path / "gateway-live"
    with pytest.raises(agent.StepError, match="exited 3: no space left"):
        agent.step_install(install_step(installer, sha, dest, kind="sh"))
    assert not (dest / ".ibgw-installed").exists()


def build_wheel(wheels: Path) -> None:
    """A minimal wheel of a one-module project, made by hand: pip installs it offline."""
    info = "ibgwdemo-1.0.dist-info"
    files = {
        "ibgwdemo.py": b"VALUE = 42\n",
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: ibgwdemo\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    digest = {
        path: base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        for path, data in files.items()
    }
    record = "".join(f"{path},sha256={digest[path]},{len(data)}\n" for path, data in files.items())
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "ibgwdemo-1.0-py3-none-any.whl", "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr(f"{info}/RECORD", record + f"{info}/RECORD,,\n")


def test_venv_is_built_from_shipped_wheels_and_stamped(tmp_path):
    build_wheel(tmp_path / "wheels")
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / "stale").write_text("x")
    step = {
        "path": str(venv),
        "wheels": str(tmp_path / "wheels"),
        "requirement": "ibgwdemo==1.0",
        "marker": ".ibgw-wheels",
        "stamp": "sha-of-wheels",
    }
    agent.step_venv(step)
    out = subprocess.run(
        [venv / "bin" / "python", "-c", "import ibgwdemo; print(ibgwdemo.VALUE)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout == "42\n"
    assert (venv / ".ibgw-wheels").read_text() == "sha-of-wheels" and not (venv / "stale").exists()


def test_a_venv_that_cannot_be_built_has_no_stamp(tmp_path):
    (tmp_path / "file").write_text("x")
    step = {
        "path": str(tmp_path / "file" / "venv"),
        "wheels": str(tmp_path),
        "requirement": "ibgw",
        "marker": ".ibgw-wheels",
        "stamp": "s",
    }
    with pytest.raises(agent.StepError, match="-m venv"):
        agent.step_venv(step)


# ---- systemd -------------------------------------------------------------


def systemd_step(**actions) -> dict:
    return {
        "kind": "systemd",
        "task": "systemd",
        "daemon_reload": False,
        "enable": [],
        "start": [],
        "restart": [],
        "reload": [],
    } | actions


def test_systemd_acts_in_order_then_checks_units_stay_up(fakebin, systemd):
    agent.step_systemd(
        systemd_step(
            daemon_reload=True,
            enable=["gw.service", "front.service"],
            start=["gw.service"],
            restart=["front.service"],
            reload=["fw.service"],
        )
    )
    assert fakebin.calls() == [
        "systemctl daemon-reload",
        "systemctl enable gw.service front.service",
        "systemctl start gw.service",
        "systemctl restart front.service",
        "systemctl reload fw.service",
        "systemctl is-enabled gw.service",
        "systemctl is-active gw.service",
        "systemctl is-enabled front.service",
        "systemctl is-active front.service",
    ]


def test_a_unit_that_dies_after_start_fails_the_step_with_its_log(fakebin, systemd):
    (systemd / "dies").write_text("front.service\n")
    with pytest.raises(agent.StepError) as failed:
        agent.step_systemd(systemd_step(start=["gw.service", "front.service"]))
    assert str(failed.value) == "not running after start: front.service; last log lines: boom: cannot bind"
    assert "journalctl --no-pager -n 5 -o cat --unit=front.service" in fakebin.calls()


def test_a_failing_systemctl_fails_the_step(fakebin):
    fakebin.add("systemctl", 'echo "Unit nope.service not found." >&2', rc=5)
    with pytest.raises(
        agent.StepError, match="systemctl restart nope.service exited 5: Unit nope.service not found"
    ):
        agent.step_systemd(systemd_step(restart=["nope.service"]))


# ---- apply: events, errors, pending unit actions ---------------------------------


def test_apply_reports_each_step_and_stops_at_the_first_failure(tmp_path, capsys):
    ok, bad = tmp_path / "ok", tmp_path / "missing" / "dir-is-a-file"
    (tmp_path / "missing").write_text("a file where a directory belongs")
    req = {"steps": [file_step(ok, "1"), file_step(bad, "2"), file_step(tmp_path / "never", "3")]}
    result = agent.apply(req)
    assert result["applied"] == 1 and result["failed"] == f"file {bad}"
    assert "File exists" in result["error"] or "Not a directory" in result["error"]
    assert [(e["event"], e["task"]) for e in events(capsys)] == [
        ("start", f"file {ok}"),
        ("done", f"file {ok}"),
        ("start", f"file {bad}"),
        ("failed", f"file {bad}"),
    ]
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    "step, error",
    [
        ({"kind": "bogus"}, "KeyError: 'bogus'"),
        ({"kind": "file"}, "KeyError: 'path'"),
        (
            {"kind": "install", "upload": "{tmp}/none", "sha256": "x", "dest": "{tmp}/d", "base": "{tmp}"},
            "{tmp}/none: sha256 differs from the pinned one after upload",
        ),
        (
            {"kind": "dir", "path": "{tmp}/file/x", "owner": ME, "group": MY_GROUP, "mode": 0o755},
            "[Errno 20] Not a directory: '{tmp}/file/x'",
        ),
        (
            {
                "kind": "file",
                "path": "{tmp}/x",
                "content": "not base64!",
                "owner": ME,
                "group": MY_GROUP,
                "mode": 0o600,
            },
            "Error: Invalid base64-encoded string",
        ),
        (
            {
                "kind": "systemd",
                "daemon_reload": False,
                "enable": [],
                "start": [],
                "restart": ["x"],
                "reload": [],
            },
            "systemctl restart x exited 1: ",
        ),
    ],
)
def test_any_step_error_is_a_reported_failure(step, error, tmp_path, fakebin, capsys):
    fakebin.add("systemctl", rc=1)
    (tmp_path / "file").write_text("a file where a directory belongs")
    step = {k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v for k, v in step.items()}
    result = agent.apply({"steps": [step | {"task": "t"}]})
    assert result["failed"] == "t" and result["applied"] == 0
    assert error.replace("{tmp}", str(tmp_path)) in result["error"]
    assert events(capsys)[-1] == {"event": "failed", "task": "t", "error": result["error"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "calls.log",
        "fakebin",
        "file",
    ]  # nothing left behind


def test_pending_unit_actions_survive_a_failed_run(tmp_path, fakebin, systemd, capsys):
    pending = tmp_path / "opt" / ".pending-systemd"
    unit = tmp_path / "ibgw-gate-live.service"
    cfg = tmp_path / "haproxy.cfg"
    fail = {"kind": "bogus", "task": "boom"}
    first = agent.apply(
        {
            "pending": str(pending),
            "steps": [
                file_step(
                    unit, "[Unit]\n", then={"daemon_reload": True, "restart": ["ibgw-gate-live.service"]}
                ),
                fail,
            ],
        }
    )
    assert first["failed"] == "boom" and unit.exists()
    assert json.loads(pending.read_text()) == {
        "daemon_reload": True,
        "restart": ["ibgw-gate-live.service"],
        "reload": [],
    }
    second = agent.apply(
        {
            "pending": str(pending),
            "steps": [
                file_step(cfg, "global\n", then={"reload": ["haproxy.service"], "restart": ["a.service"]}),
                fail,
            ],
        }
    )
    assert second["failed"] == "boom"
    assert json.loads(pending.read_text()) == {
        "daemon_reload": True,
        "reload": ["haproxy.service"],
        "restart": ["a.service", "ibgw-gate-live.service"],
    }
    assert agent.read(str(pending)) is not None and pending.stat().st_mode & 0o077 == 0  # root-only
    third = agent.apply({"pending": str(pending), "steps": [systemd_step(daemon_reload=True)]})
    assert third == {"applied": 1, "failed": None} and not pending.exists()
    assert leftovers(pending.parent) == []


def test_pending_survives_a_failing_systemd_step(tmp_path, fakebin):
    fakebin.add("systemctl", rc=1)
    pending = tmp_path / ".pending-systemd"
    pending.write_text('{"daemon_reload": true, "restart": [], "reload": []}')
    result = agent.apply({"pending": str(pending), "steps": [systemd_step(daemon_reload=True)]})
    assert result["failed"] == "systemd" and json.loads(pending.read_text())["daemon_reload"] is True


def test_a_corrupt_or_planted_pending_file_is_replaced_not_followed(tmp_path):
    pending = tmp_path / ".pending-systemd"
    pending.write_text("{not json")
    agent.note_pending(str(pending), {"restart": ["x.service"]})
    assert json.loads(pending.read_text()) == {"daemon_reload": False, "restart": ["x.service"], "reload": []}
    victim = tmp_path / "victim"
    victim.write_text('{"restart": ["evil.service"]}')
    pending.unlink()
    pending.symlink_to(victim)
    agent.note_pending(str(pending), {"reload": ["y.service"]})
    assert not pending.is_symlink() and victim.read_text() == '{"restart": ["evil.service"]}'
    assert json.loads(pending.read_text()) == {"daemon_reload": False, "restart": [], "reload": ["y.service"]}


def test_a_step_without_then_or_without_a_pending_path_records_nothing(tmp_path):
    pending = tmp_path / ".pending-systemd"
    agent.apply({"pending": str(pending), "steps": [file_step(tmp_path / "a", "x")]})
    agent.apply({"steps": [file_step(tmp_path / "b", "x", then={"restart": ["r"]})]})
    assert not pending.exists() and (tmp_path / "b").exists()


# ---- health and monitoring ---------------------------------------------------


def test_listeners_decode_proc_addresses():
    assert agent.proc_address("0100007F", 8) == "127.0.0.1"
    assert agent.proc_address("00000000000000000000000001000000", 32) == "::1"
    assert agent.proc_address("0000000000000000FFFF00000100007F", 32) == "::ffff:127.0.0.1"


def test_health_reads_units_listeners_resources_and_recent_errors(tmp_path, fakebin, systemd):
    (systemd / "gw.service.active").write_text("active\n")
    fakebin.add("nft", rc=1)
    log = tmp_path / "ibc-live.txt"
    now, old = time.time(), time.time() - 3600
    fresh, iso = (time.strftime(f"%Y-%m-%d{sep}%H:%M:%S", time.localtime(now)) for sep in " T")
    log.write_text(
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(old))} old line\nno timestamp\n"
        f"{fresh} Login has completed\n{iso} iso line\n"
    )
    stale = tmp_path / "stale.txt"
    stale.write_text(f"{fresh} in a file untouched for an hour\n")
    os.utime(stale, (old, old))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        got = agent.health(
            {
                "units": ["gw.service"],
                "firewall": True,
                "disk_paths": [str(tmp_path)],
                "log_files": [str(tmp_path / "*.txt")],
                "log_minutes": 10,
            }
        )
    assert got["units"] == {
        "gw.service": {"active": "active", "sub": "running", "restarts": 2, "result": "success", "since": 5.0}
    }
    assert "127.0.0.1" in got["listeners"][port]
    assert got["firewall"] is False and got["uptime"] > 0
    res = got["resources"]
    assert 0 < res["mem_available_mb"] <= res["mem_total_mb"] and res["cpus"] >= 1
    assert 0 <= res["disk_used_pct"][str(tmp_path)] <= 100
    assert got["log_lines"] == [
        {"file": str(log), "line": f"{fresh} Login has completed"},
        {"file": str(log), "line": f"{iso} iso line"},
    ]
    assert got["journal_errors"] == ["boom: cannot bind"]
    assert "journalctl --no-pager -o cat -p err --since=-10min --unit=gw.service" in fakebin.calls()


def test_health_without_firewall_does_not_ask_nft(fakebin, systemd):
    fakebin.add("nft", rc=99)
    got = agent.health({"units": [], "firewall": False, "disk_paths": [], "log_files": [], "log_minutes": 1})
    assert got["firewall"] is None and not any(c.startswith("nft") for c in fakebin.calls())


STICK_TABLE = (
    b"# table: live, type: ip, size:102400, used:2\n"
    b"0x55d0c4a3a0f0: key=198.51.100.7 use=1 exp=86390000 shard=0 conn_cnt=3 conn_cur=1 "
    b"bytes_in_cnt=1200 bytes_out_cnt=3400\n"
    b"0x55d0c4a3a1f0: key=::ffff:10.0.0.9 use=0 exp=1000 shard=0 conn_cnt=1 conn_cur=0 "
    b"bytes_in_cnt=0 bytes_out_cnt=0\n\n"
)


@pytest.fixture
def haproxy_socket(tmp_path):
    """HAProxy's runtime API, as far as `show table` goes: one command per connection."""
    path = tmp_path / "admin.sock"
    asked = []
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    server.settimeout(10)

    def serve():
        for _ in range(100):
            try:
                conn, _ = server.accept()
            except OSError:  # closed, or 10 s without a client
                return
            with conn:
                asked.append(conn.recv(1024).decode())
                conn.sendall(STICK_TABLE if asked[-1] == "show table live\n" else b"No such table\n")

    threading.Thread(target=serve, daemon=True).start()
    yield path, asked
    server.close()


@pytest.fixture
def gate_metrics():
    text = (
        "# HELP ibgw_gate_app_connected Is the app connected\n"
        'ibgw_gate_app_connected{mode="live",app="algo1"} 1\n'
        'ibgw_gate_app_messages_in_total{mode="live",app="algo1"} 17\n'
        'ibgw_gate_app_last_seen_seconds{mode="live",app="algo1"} 1700000000.5\n'
        'ibgw_gate_app_connected{mode="live",app="report"} 0\n'
        "ibgw_gate_up 1\n"
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode() if self.path == "/metrics" else b""
            self.send_response(200 if body else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_monitor_streams_stick_tables_and_gate_figures(haproxy_socket, gate_metrics, capsys):
    path, asked = haproxy_socket
    result = agent.monitor(
        {
            "socket": str(path),
            "tables": ["live"],
            "interval": 0,
            "count": 2,
            "gates": {"live": gate_metrics, "paper": free_port()},
        }
    )
    assert result == {"samples": 2}
    samples = events(capsys)
    assert len(samples) == 2 and asked == ["show table live\n"] * 2
    rows = samples[0]["sample"]["live"]
    assert rows[0] == {
        "key": "198.51.100.7",
        "use": 1,
        "exp": 86390000,
        "shard": 0,
        "conn_cnt": 3,
        "conn_cur": 1,
        "bytes_in_cnt": 1200,
        "bytes_out_cnt": 3400,
    }
    assert rows[1]["key"] == "::ffff:10.0.0.9" and rows[1]["conn_cur"] == 0
    assert samples[0]["gates"] == {
        "live": {
            "algo1": {"connected": 1.0, "messages_in": 17.0, "last_seen": 1700000000.5},
            "report": {"connected": 0.0},
        },
        "paper": None,
    }  # a gate that is down
    assert samples[1]["at"] >= samples[0]["at"]


def test_an_unknown_table_has_no_rows(haproxy_socket):
    path, _ = haproxy_socket
    assert agent.haproxy_table(str(path), "paper") == []


# ---- the program as the host runs it -----------------------------------------------


def test_main_answers_one_request_with_a_result_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "m").write_text("stamp")
    req = {
        "op": "facts",
        "packages": [],
        "user": "root",
        "paths": [str(tmp_path / "m")],
        "units": [],
        "markers": [str(tmp_path / "m")],
    }
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(json.dumps(req).encode())))
    agent.main()
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["result"]["markers"] == {str(tmp_path / "m"): "stamp"}


def test_boot_runs_the_agent_from_stdin_as_the_host_does(tmp_path):
    """The exact command sent over SSH: the agent's source, then the request, on stdin only."""
    req = {"op": "apply", "steps": [file_step(tmp_path / "f", "hello\n", 0o600)]}
    stdin = b"a sudo password line, if sudo did not read it\n" + agent_stdin(req)
    proc = subprocess.run(
        ["sh", "-c", BOOT.replace("python3", sys.executable, 1)], input=stdin, capture_output=True, timeout=60
    )
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert proc.returncode == 0, proc.stderr
    assert lines == [
        {"event": "start", "task": f"file {tmp_path / 'f'}"},
        {"event": "done", "task": f"file {tmp_path / 'f'}"},
        {"result": {"applied": 1, "failed": None}},
    ]
    assert (tmp_path / "f").read_text() == "hello\n"
