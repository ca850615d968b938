"""Which host OS ibgw provisions, the package names per release, and apt waiting for the dpkg lock."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ibgw_provision import inventory
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import agent, apply, platforms, remote, state
from ibgw_provision.provision.plan import facts_request, plan
from ibgw_provision.provision.recap import Recap
from ibgw_provision.provision.transport import Result, Target
from tests.conftest import INVENTORIES

AMAZON = (
    'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nID_LIKE="fedora"\nVERSION_ID="2023"\n'
    'PRETTY_NAME="Amazon Linux 2023"\n'
)
TRIXIE = 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\nID=debian\n'
JAMMY = 'PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nID_LIKE=debian\n'
REFUSED = "unsupported OS: Amazon Linux 2023 (ibgw supports Debian 12, 13 and Ubuntu 22.04, 24.04)"


def os_release(monkeypatch, tmp_path, text: str | None) -> None:
    path = tmp_path / "os-release"
    if text is not None:
        path.write_text(text)
    monkeypatch.setattr(agent, "OS_RELEASE", (str(path),))


def facts_on(monkeypatch, tmp_path, text: str | None) -> dict:
    """The agent's facts on a host with this os-release; it must not run any command before refusing."""
    os_release(monkeypatch, tmp_path, text)
    want = state.desired(inventory.load(INVENTORIES / "local.yml"), "local", Secrets(masked=True))
    monkeypatch.setattr(agent, "sh", lambda *a, **k: pytest.fail(f"ran {a} on an unsupported host"))
    return agent.facts(facts_request(want, wheels=True))


def test_a_host_without_dpkg_is_refused_by_name_before_anything_runs(monkeypatch, tmp_path):
    facts = facts_on(monkeypatch, tmp_path, AMAZON)
    assert facts == {
        "os": {"id": "amzn", "version_id": "2023", "pretty_name": "Amazon Linux 2023"},
        "unsupported": "Amazon Linux 2023",
    }
    with pytest.raises(platforms.UnsupportedOS) as refused:
        platforms.release(facts)
    assert str(refused.value) == REFUSED


def test_a_supported_release_without_dpkg_query_is_refused_too(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it: no dpkg-query
    facts = facts_on(monkeypatch, tmp_path, TRIXIE)
    assert facts["unsupported"] == "Debian GNU/Linux 13 (trixie) without dpkg"


@pytest.mark.parametrize(
    "text, shown",
    [
        (None, "unknown (no /etc/os-release)"),
        (
            'ID=debian\nVERSION_ID="11"\nPRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\n',
            "Debian GNU/Linux 11 (bullseye)",
        ),
        ('ID=ubuntu\nVERSION_ID="20.04"\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n', "Ubuntu 20.04.6 LTS"),
    ],
)
def test_other_releases_are_refused_by_name(monkeypatch, tmp_path, text, shown):
    with pytest.raises(
        platforms.UnsupportedOS, match=rf"^unsupported OS: {re.escape(shown)} \(ibgw supports"
    ):
        platforms.release(facts_on(monkeypatch, tmp_path, text))


@pytest.mark.parametrize("text, python", [(TRIXIE, "3.13"), (JAMMY, "3.10")])
def test_supported_releases_report_their_facts(monkeypatch, tmp_path, text, python):
    os_release(monkeypatch, tmp_path, text)
    want = state.desired(inventory.load(INVENTORIES / "local.yml"), "local", Secrets(masked=True))
    facts = agent.facts(facts_request(want, wheels=True))  # on this machine's dpkg: unknown names are absent
    assert "unsupported" not in facts
    assert facts["memory_mb"] > 0 and facts["packages"]
    assert platforms.release(facts).python == python


def test_the_agent_compiles_on_an_old_python3_so_it_can_refuse_that_host():
    # RHEL 8's python3 is 3.6: a SyntaxError there would be a traceback, not "unsupported OS".
    ast.parse(Path(agent.__file__).read_text(), feature_version=(3, 6))


def test_debian_13_and_ubuntu_get_their_own_package_names(example):
    host = example.hosts["gw1"].model_copy(
        update={"front": example.hosts["gw1"].front.model_copy(update={"kind": "nginx"})}
    )
    example.hosts["gw1"] = host
    want = state.desired(example, "gw1", Secrets(masked=True))
    assert "nginx-light" in want.packages  # named as on Debian 12
    asked = facts_request(want, wheels=True)["packages"]
    assert "nginx-light" in asked and "nginx" in asked  # the facts query covers every release's names
    fresh = {"packages": {}, "user": None, "paths": {}, "content": {}, "units": {}, "markers": {}}
    for key, front in (
        (("debian", "12"), ["nginx-light", "libnginx-mod-stream"]),
        (("debian", "13"), ["nginx", "libnginx-mod-stream"]),
        (("ubuntu", "24.04"), ["nginx", "libnginx-mod-stream"]),
    ):
        steps = plan(want, fresh, Secrets(masked=True), None, release=platforms.RELEASES[key]).steps()
        apt = next(s for s in steps if s["kind"] == "apt")
        assert apt["packages"][1:3] == front, key
        assert "xvfb" in apt["packages"] and "python3-venv" in apt["packages"]


@pytest.fixture
def example():
    return inventory.load(INVENTORIES / "example.yml")


class FakeTransport:
    def __init__(self, target):
        self.target, self.round_trips = target, 0
        self.login_user = target.user or "root"  # as the real one says once connected

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def test_provision_reports_an_unsupported_os_as_one_failed_line(monkeypatch, capsys):
    inv = inventory.load(INVENTORIES / "local.yml")
    monkeypatch.setattr(apply, "Transport", FakeTransport)
    monkeypatch.setattr(
        apply,
        "call_agent",
        lambda transport, request, **kw: {
            "os": {"id": "amzn", "version_id": "2023", "pretty_name": "Amazon Linux 2023"},
            "unsupported": "Amazon Linux 2023",
        },
    )
    (report,) = apply.provision(inv, ["local"], apply.Options())
    assert report.failed == REFUSED and report.reached and not report.unreachable and not report.tasks
    from rich.console import Console

    code = Recap(console=Console(file=sys.stdout, width=200, color_system=None)).show([report])
    assert code == 1
    assert f"[local] FAILED: {REFUSED}" in capsys.readouterr().out.splitlines()


def test_a_host_without_python3_or_apt_is_named(tmp_path):
    """remote's python3 bootstrap, run by sh on a PATH with no apt-get: exit 3 with the OS's name."""
    (tmp_path / "sh").symlink_to("/bin/sh")
    proc = subprocess.run(
        ["/bin/sh", "-c", remote.INSTALL_PYTHON],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=10,
    )
    pretty = next(
        line.split("=", 1)[1].strip('"')
        for line in Path("/etc/os-release").read_text().splitlines()
        if line.startswith("PRETTY_NAME=")
    )
    assert (proc.returncode, proc.stderr.strip()) == (3, pretty)


# ---- the dpkg lock ---------------------------------------------------------

HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    with open("/proc/self/comm", "w") as fh:
        fh.write("unattended-upgr")  # as the real holder names itself (comm is 15 characters)
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.lockf(fd, fcntl.LOCK_EX)  # a POSIX lock, as apt and dpkg take
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
""")


@pytest.fixture
def locks(tmp_path, monkeypatch):
    paths = [tmp_path / name for name in ("lock-frontend", "lock", "lists-lock")]
    monkeypatch.setattr(agent, "DPKG_LOCKS", tuple(str(p) for p in paths))
    monkeypatch.setattr(agent, "LOCK_REPORT_EVERY", 0.4)
    monkeypatch.setattr(agent, "LOCK_POLL", 0.05)
    return paths


def hold(path: Path, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "locked\n"
    return child


def events(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_nobody_holds_a_lock_file_that_does_not_exist_or_is_free(locks):
    assert agent.lock_holder(str(locks[0])) is None
    locks[0].touch()
    assert agent.lock_holder(str(locks[0])) is None


def test_the_wait_names_the_holder_and_ends_when_it_lets_go(locks, capsys):
    child = hold(locks[2], 1.5)
    try:
        assert agent.lock_holder(str(locks[2])) == child.pid
        started = time.monotonic()
        agent.wait_for_locks("install haproxy", time.monotonic() + 20)
        waited = time.monotonic() - started
    finally:
        child.kill()
        child.wait(10)
    said = events(capsys)
    assert 0.5 < waited < 15
    assert len(said) >= 2  # one at once, then every LOCK_REPORT_EVERY
    assert said[0] == {
        "event": "wait",
        "task": "install haproxy",
        "message": f"waiting for the dpkg lock held by PID {child.pid} (unattended-upgr)",
    }


def test_the_wait_is_bounded(locks, capsys):
    child = hold(locks[0], 30)
    try:
        with pytest.raises(
            agent.StepError,
            match=rf"lock-frontend is still held by PID {child.pid} "
            r"\(unattended-upgr\): gave up waiting",
        ):
            agent.wait_for_locks("install haproxy", time.monotonic() + 0.5)
    finally:
        child.kill()
        child.wait(10)


FAKE_APT = textwrap.dedent("""\
    #!/bin/sh
    echo "$*" >> "{log}"
    case "$*" in *update*) if [ ! -e "{log}.busy-once" ]; then touch "{log}.busy-once";
        echo "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 42" >&2; exit 100; fi;;
    esac
    exit 0
""")


def test_apt_retries_an_update_that_lost_the_race_and_tells_apt_to_wait(locks, tmp_path, monkeypatch, capsys):
    log = tmp_path / "apt.log"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT.format(log=log))
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    agent.step_apt({"task": "install haproxy", "packages": ["haproxy"], "lock_timeout": 60})
    calls = log.read_text().splitlines()
    assert [c.split()[2] for c in calls] == ["update", "update", "install"]
    for call in calls:
        timeout = int(call.split()[1].split("=")[1])
        assert call.startswith("-o DPkg::Lock::Timeout=") and 50 <= timeout <= 60


def test_the_apply_request_carries_the_lock_timeout_to_the_apt_step(monkeypatch):
    seen = {}
    monkeypatch.setitem(agent.STEPS, "apt", lambda step: seen.update(step))
    agent.apply({"steps": [{"kind": "apt", "task": "install x", "packages": ["x"]}], "lock_timeout": 42})
    assert seen["lock_timeout"] == 42


def test_call_agent_names_the_os_of_a_host_without_python3_or_apt():
    class NoPython:
        target = Target("gw", "203.0.113.10", 22, "root", None, Path("/nonexistent"), False)
        login_user = "root"

        def __init__(self):
            self.commands = []

        def run(self, command, stdin=b"", on_line=None):
            self.commands.append(command)
            if command == remote.INSTALL_PYTHON:
                return Result(3, "", "Amazon Linux 2\n")
            return Result(127, "", "sh: python3: not found\n")

    transport = NoPython()
    with pytest.raises(remote.AgentError) as refused:
        remote.call_agent(transport, {"op": "facts"})
    assert str(refused.value) == (
        "unsupported OS: Amazon Linux 2 (ibgw supports Debian 12, 13 and Ubuntu 22.04, 24.04)"
    )
    assert transport.commands == [remote.BOOT, remote.INSTALL_PYTHON]
