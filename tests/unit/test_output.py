"""What provision, validate and render print: the recap's unreachable column, plain lines for logs, JSON."""

from __future__ import annotations

import io
import json
import socket

import pytest
import yaml
from click.testing import CliRunner

from ibgw_provision import cli, inventory
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import apply, layout, recap, state
from ibgw_provision.provision.plan import Task
from ibgw_provision.provision.transport import SshError
from tests.conftest import INVENTORIES
from tests.unit.test_plan import converged

DEBIAN_12 = {"id": "debian", "version_id": "12", "pretty_name": "Debian GNU/Linux 12 (bookworm)"}


def printed(reports, **options) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = recap.Recap(console=recap.console_for(out), **options).show(reports)
    return code, [line.rstrip() for line in out.getvalue().splitlines()]


def test_an_unreachable_host_has_its_own_column_and_fails_the_run():
    down = apply.Report("gw2", failed="root@203.0.113.11:22: unreachable: timed out", unreachable=True)
    ok = apply.Report("gw1", [Task("user ibkr", False)], round_trips=2, seconds=0.5)
    code, lines = printed([ok, down])
    assert code == 1
    assert "[gw2] UNREACHABLE: root@203.0.113.11:22: unreachable: timed out" in lines
    header, gw1, gw2 = lines[-3:]
    assert header.split() == ["host", "ok", "changed", "unreachable", "failed", "round", "trips", "time"]
    assert gw1.split() == ["gw1", "1", "0", "0", "0", "2", "0.5s"]
    assert gw2.split() == ["gw2", "0", "0", "1", "0", "0", "0.0s"]


def test_a_refused_host_exits_2_and_a_failed_one_1():
    failed = apply.Report("gw1", failed="file /etc/x: haproxy -c exited 1", reached=True)
    refused = apply.Report("gw2", failed="gw2: needs about 2712 MB ...", refused=True, reached=True)
    assert printed([failed])[0] == 1
    code, lines = printed([failed, refused])
    assert code == 2
    assert "[gw2] REFUSED: gw2: needs about 2712 MB ..." in lines
    assert lines[-1].split()[:5] == ["gw2", "0", "0", "0", "1"]


def test_off_a_terminal_progress_is_one_plain_line_per_step_and_nothing_wraps():
    out = io.StringIO()
    shown = recap.Recap(console=recap.console_for(out))
    long = "install " + " ".join(f"package-{i}" for i in range(30))
    with shown.progress(["gw1", "gw2"]) as on_event:
        on_event("gw1", "reading facts")
        on_event("gw2", "reading facts")
        on_event("gw1", long)
        on_event("gw1", "waiting for the dpkg lock held by PID 812 (unattended-upgr)")
    assert out.getvalue().splitlines() == [
        "[gw1] reading facts",
        "[gw2] reading facts",
        f"[gw1] {long}",
        "[gw1] waiting for the dpkg lock held by PID 812 (unattended-upgr)",
    ]
    assert "\x1b" not in out.getvalue()


def test_a_long_failure_is_one_line_in_a_log():
    error = "file /etc/haproxy/haproxy.cfg: " + "x" * 300
    _, lines = printed([apply.Report("gw1", failed=error, reached=True)])
    assert f"[gw1] FAILED: {error}" in lines


class Unreachable:
    def __init__(self, target):
        self.target, self.round_trips = target, 0
        self.login_user = target.user or "root"  # as the real one says once connected

    def __enter__(self):
        raise SshError(f"root@{self.target.address}:{self.target.port}: unreachable: Connection refused")

    def __exit__(self, *exc):
        return None


class Connected(Unreachable):
    def __enter__(self):
        return self


def test_ssh_failing_before_the_agent_ran_is_unreachable_after_it_is_failed(monkeypatch):
    inv = inventory.load(INVENTORIES / "local.yml")
    monkeypatch.setattr(apply, "Transport", Unreachable)
    (report,) = apply.provision(inv, ["local"], apply.Options())
    assert report.unreachable and report.failed.endswith("unreachable: Connection refused")

    def facts_then_lost(transport, request, **kw):
        if request["op"] == "apply":
            raise SshError("local: connection lost: EOF")
        return {
            "os": DEBIAN_12,
            "memory_mb": 4000,
            "python": "3.11.2",
            "glibc": "2.36",
            "arch": "x86_64",
            "packages": {},
            "user": None,
            "paths": {},
            "content": {},
            "units": {},
            "markers": {},
        }

    monkeypatch.setattr(apply, "Transport", Connected)
    monkeypatch.setattr(apply, "call_agent", facts_then_lost)
    monkeypatch.setattr(apply, "Secrets", lambda: Secrets(masked=True))
    monkeypatch.setattr(apply.wheelhouse, "build", lambda *a: None)  # no venv step: not what this is about
    (report,) = apply.provision(inv, ["local"], apply.Options())
    assert not report.unreachable and report.failed == "local: connection lost: EOF"
    assert recap.as_json([report])["hosts"][0]["status"] == "failed"


# ---- JSON ----------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def test_validate_json():
    result = run("validate", "-i", str(INVENTORIES / "example.yml"), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert list(data) == ["schema", "inventory", "ok", "errors", "warnings", "hosts"]
    assert data["schema"] == "ibgw.validate/1" and data["ok"] and data["errors"] == []
    (gw1,) = data["hosts"]
    assert gw1 == {
        "name": "gw1",
        "backend": "ibgw",
        "front": "haproxy",
        "gate": True,
        "gateways": [
            {"mode": "paper", "api_port": 4002, "front_port": 4004, "java_heap": "384m"},
            {"mode": "live", "api_port": 4001, "front_port": 4003, "java_heap": "384m"},
        ],
        "apps": ["smart-lean-0dte", "python-research", "node-service"],
    }


def test_validate_json_of_a_bad_inventory_lists_each_error_and_exits_2(tmp_path):
    data = yaml.safe_load((INVENTORIES / "local.yml").read_text())
    data["hosts"]["local"]["gateways"][0]["mode"] = "demo"
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run("validate", "-i", str(bad), "--json")
    assert result.exit_code == 2
    out = json.loads(result.stdout)
    assert out["ok"] is False and out["hosts"] == []
    error = out["errors"][0]
    assert list(error) == ["file", "line", "field", "message"]
    assert error["file"] == str(bad) and error["line"] and error["field"].endswith("gateways[0].mode")
    assert "error: " in result.stderr  # the usual one line per problem, too


def test_render_json(tmp_path):
    result = run("render", "local", "-i", str(INVENTORIES / "local.yml"), "--out", str(tmp_path), "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["schema"] == "ibgw.render/1" and data["host"] == "local"
    haproxy = next(f for f in data["files"] if f["path"] == "/etc/haproxy/haproxy.cfg")
    assert haproxy == {
        "path": "/etc/haproxy/haproxy.cfg",
        "mode": "0644",
        "owner": "root",
        "group": "root",
        "secret": False,
        "written": str(tmp_path / "etc/haproxy/haproxy.cfg"),
    }
    assert all((tmp_path / f["path"].lstrip("/")).is_file() for f in data["files"])


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_provision_json_of_an_unreachable_host(tmp_path, closed_port):
    data = yaml.safe_load((INVENTORIES / "local.yml").read_text())
    data["hosts"]["local"]["ssh"] = {"user": "root", "port": closed_port, "known_hosts": str(tmp_path / "kh")}
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = run("provision", "local", "-i", str(path), "--json")
    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["schema"] == "ibgw.provision/1" and out["exit_code"] == 1
    (host,) = out["hosts"]
    assert list(host) == [
        "host",
        "status",
        "check",
        "ok",
        "changed",
        "unreachable",
        "failed",
        "refused",
        "error",
        "warnings",
        "round_trips",
        "seconds",
        "tasks",
        "pending_restarts",
    ]
    assert host["status"] == "unreachable" and host["unreachable"] and not host["failed"]
    assert host["error"].startswith(f"root@127.0.0.1:{closed_port}: unreachable")
    assert "[local] connecting" not in result.stdout  # progress went to stderr


def test_provision_json_lists_each_hosts_pending_restarts(monkeypatch):
    """A fake agent's facts: live's restart is already recorded; paper's gate config changes under an app."""
    inv = inventory.load(INVENTORIES / "local.yml")
    want = state.desired(inv, "local", Secrets())
    paper, live = layout.gateway_unit("paper"), layout.gateway_unit("live")
    gate_config = next(f for f in want.files if layout.gate_unit("paper") in f.restart)
    facts = converged(want) | {"os": DEBIAN_12, "memory_mb": 4000, "python": "3.11.2", "glibc": "2.36"}
    facts["arch"] = "x86_64"
    facts["paths"][gate_config.path] = dict(facts["paths"][gate_config.path], sha256="0" * 64)
    facts["gate_apps"] = {mode: {"smart-lean-0dte": {"connected": 1.0}} for mode in ("paper", "live")}
    since = "2026-11-27T15:00:00Z"
    record = {"units": [live], "reason": "1 app connected (smart-lean-0dte)", "apps": ["smart-lean-0dte"]}
    facts["pending"] = {live: record | {"since": since}}
    requests = []

    def agent(transport, request, **kw):
        requests.append(request["op"])
        return facts

    monkeypatch.setattr(apply, "Transport", Connected)
    monkeypatch.setattr(apply, "call_agent", agent)
    monkeypatch.setattr(apply.wheelhouse, "build", lambda *a: None)
    result = run("provision", "local", "-i", str(INVENTORIES / "local.yml"), "--check", "--json")
    assert requests == ["facts"] and result.exit_code == 0, result.output
    (host,) = json.loads(result.stdout)["hosts"]
    first, second = host["pending_restarts"]
    assert first.pop("since") >= "2026"  # this run's clock: the agent stamps it when it records it
    assert first == {
        "unit": paper,
        "units": [layout.gate_unit("paper")],
        "reason": "1 app connected (smart-lean-0dte)",
        "apps": ["smart-lean-0dte"],
    }
    assert second == {"unit": live, **record, "since": since}  # as `ibgw health` shows it
