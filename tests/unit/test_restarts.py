"""Trader-safe restarts: decided on a fake clock and fake apps; the agent's records in a temp dir."""

from __future__ import annotations

import datetime
import socket

import pytest
import yaml
from click.testing import CliRunner

from ibgw_provision import cli
from ibgw_provision.inventory.model import TradingHours
from ibgw_provision.inventory.secrets import Secrets
from ibgw_provision.provision import agent, apply, layout, restarts, state
from ibgw_provision.provision.plan import plan
from ibgw_provision.provision.render import render_host
from tests.conftest import INVENTORIES
from tests.unit.test_plan import converged

NY = datetime.timezone(datetime.timedelta(hours=-5))  # New York in winter (EST)
SATURDAY_NOON = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=NY)
TUESDAY = datetime.date(2026, 11, 24)
LIVE, PAPER = layout.gateway_unit("live"), layout.gateway_unit("paper")
HEAP = f"{layout.ib_gateway_dir('live', '10.37.1n')}/ibgateway.vmoptions"


def at(hh: int, mm: int, day: datetime.date = TUESDAY) -> datetime.datetime:
    return datetime.datetime.combine(day, datetime.time(hh, mm), tzinfo=NY)


@pytest.mark.parametrize(
    "when,inside",
    [
        (at(10, 0), True),
        (at(9, 0), True),  # the 30 min margin before the open
        (at(8, 59), False),
        (at(16, 30), True),
        (at(16, 31), False),
        (SATURDAY_NOON, False),
        (at(10, 0).astimezone(datetime.UTC), True),  # any zone: compared in the session's
    ],
)
def test_trading_hours_with_their_margin(when, inside):
    assert restarts.in_trading_hours(TradingHours(), when) == inside


def test_trading_hours_are_configurable():
    hours = TradingHours(days=["Sat"], open="08:00", close="09:00", margin="0m", time_zone="UTC")
    assert restarts.in_trading_hours(hours, datetime.datetime(2026, 11, 28, 8, 30, tzinfo=datetime.UTC))
    assert not restarts.in_trading_hours(hours, datetime.datetime(2026, 11, 28, 9, 1, tzinfo=datetime.UTC))


@pytest.fixture
def want(example, monkeypatch):
    monkeypatch.setattr("ibgw_provision.inventory.secrets._read", lambda ref: f"secret-{ref.env or 'file'}")
    return state.desired(example, "gw1", Secrets())


def heap_changed(want) -> dict:
    facts = converged(want)
    facts["paths"][HEAP] = dict(facts["paths"][HEAP], sha256="0" * 64)
    facts["content"][HEAP] = "-Xmx512m\n"
    return facts


def systemd(result) -> dict:
    """The systemd step (none when no unit has anything to do)."""
    steps = [s for s in result.steps() if s["kind"] == "systemd"]
    assert len(steps) <= 1
    return steps[0] if steps else {"restart": [], "reload": [], "clear": []}


def pending(result) -> list:
    return [t for t in result.tasks if t.pending]


def test_a_heap_change_with_an_app_connected_waits(want):
    facts = heap_changed(want) | {"clients": {"4001": 2}}
    result = plan(want, facts, Secrets(), policy=restarts.Policy(now=SATURDAY_NOON))
    assert any(s["kind"] == "file" and s["path"] == HEAP for s in result.steps())  # the file changes
    assert LIVE not in systemd(result)["restart"]  # the gateway does not restart
    (task,) = pending(result)
    assert task.changed and "2 apps connected" in task.detail and "--restart now" in task.detail
    (step,) = [s for s in result.steps() if s["kind"] == "pending"]
    assert step["path"] == layout.pending_file(LIVE) and step["record"]["units"] == [LIVE]


def test_the_gate_names_the_apps_a_restart_would_disconnect(want):
    gate_apps = {"live": {"smart-lean-0dte": {"connected": 1.0}, "python-research": {"connected": 0.0}}}
    facts = heap_changed(want) | {"gate_apps": gate_apps, "clients": {"4001": 1}}
    (task,) = pending(plan(want, facts, Secrets(), policy=restarts.Policy(now=SATURDAY_NOON)))
    assert "1 app connected (smart-lean-0dte)" in task.detail


def test_live_waits_inside_its_trading_hours_paper_does_not(want):
    facts = heap_changed(want)
    for path in list(facts["paths"]):  # paper's heap too
        if path.endswith("ibgateway.vmoptions"):
            facts["paths"][path] = dict(facts["paths"][path], sha256="0" * 64)
    result = plan(want, facts, Secrets(), policy=restarts.Policy(now=at(11, 0)))
    assert PAPER in systemd(result)["restart"] and LIVE not in systemd(result)["restart"]
    (task,) = pending(result)
    assert "trading hours" in task.detail
    after_hours = plan(want, facts, Secrets(), policy=restarts.Policy(now=at(18, 0)))
    assert {PAPER, LIVE} <= set(systemd(after_hours)["restart"]) and not pending(after_hours)


def test_restart_now_restarts_at_once(want):
    facts = heap_changed(want) | {"clients": {"4001": 3}}
    result = plan(want, facts, Secrets(), policy=restarts.Policy("now", now=at(11, 0)))
    assert LIVE in systemd(result)["restart"] and not pending(result)


def both_heaps_changed(want) -> dict:
    facts = heap_changed(want)
    for path in list(facts["paths"]):  # paper's heap too
        if path.endswith("ibgateway.vmoptions"):
            facts["paths"][path] = dict(facts["paths"][path], sha256="0" * 64)
    return facts | {"clients": {"4001": 1, "4002": 1}}


def test_restart_one_mode_restarts_only_that_gateway(want):
    facts = both_heaps_changed(want)
    result = plan(
        want, facts, Secrets(), policy=restarts.Policy(now=SATURDAY_NOON, gateways=frozenset({"paper"}))
    )
    restarted = set(systemd(result)["restart"])
    assert PAPER in restarted and not restarted & {LIVE, layout.xvfb_unit("live"), layout.gate_unit("live")}
    (task,) = pending(result)
    assert task.name == f"restart {LIVE}" and task.changed and "`--restart live`" in task.detail
    (step,) = [s for s in result.steps() if s["kind"] == "pending"]
    assert step["path"] == layout.pending_file(LIVE)
    kinds = [s["kind"] for s in result.steps()]  # a run cut after the systemd step (which clears the
    assert kinds.index("pending") < kinds.index("systemd")  # actions owed) still has live's record


def test_restart_one_mode_applies_its_record_and_keeps_the_others(want):
    records = {
        unit: {"units": [unit], "reason": "1 app connected (a)", "apps": ["a"], "since": "x"}
        for unit in (PAPER, LIVE)
    }
    facts = converged(want) | {"gate_apps": {m: {"a": {"connected": 1.0}} for m in ("paper", "live")}}
    facts |= {"pending": records}
    result = plan(
        want, facts, Secrets(), policy=restarts.Policy(now=SATURDAY_NOON, gateways=frozenset({"live"}))
    )
    step = systemd(result)
    assert LIVE in step["restart"] and PAPER not in step["restart"]
    assert step["clear"] == [layout.pending_file(LIVE)]  # paper's record stays on the host
    (task,) = pending(result)
    assert task.name == f"restart {PAPER}" and not task.changed


@pytest.mark.parametrize(
    "values,parsed",
    [
        ((), ("safe", frozenset())),
        (("now",), ("now", frozenset())),
        (("live",), ("safe", frozenset({"live"}))),
        (("paper,live",), ("safe", frozenset({"paper", "live"}))),
        (("paper", "live"), ("safe", frozenset({"paper", "live"}))),
    ],
)
def test_restart_values(values, parsed):
    assert restarts.parse(values) == parsed


@pytest.mark.parametrize(
    "values,error",
    [(("lve",), "unknown value 'lve'"), (("now,live",), "alone"), (("safe", "paper"), "alone")],
)
def test_bad_restart_values_are_refused(values, error):
    with pytest.raises(ValueError, match=error):
        restarts.parse(values)


def test_the_cli_refuses_a_bad_restart_in_one_line(tmp_path):
    inv = tmp_path / "inv.yml"
    data = yaml.safe_load((INVENTORIES / "local.yml").read_text())
    data["hosts"]["local"]["gateways"] = data["hosts"]["local"]["gateways"][:1]  # paper only
    for app in data["hosts"]["local"]["apps"]:
        app["modes"] = ["paper"]
    inv.write_text(yaml.safe_dump(data, sort_keys=False))
    for value, message in (("lve", "unknown value 'lve'"), ("live", "no selected host has a live gateway")):
        result = CliRunner().invoke(cli.main, ["provision", "local", "-i", str(inv), "--restart", value])
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: --restart: {message}")


def test_the_cli_passes_the_named_gateways_on(monkeypatch):
    seen = []
    monkeypatch.setattr(apply, "provision", lambda inv, names, opts: seen.append(opts) or [])
    for args, expected in (([], ("safe", set())), (["--restart", "paper,live"], ("safe", {"paper", "live"}))):
        result = CliRunner().invoke(
            cli.main, ["provision", "local", "-i", str(INVENTORIES / "local.yml"), *args]
        )
        assert result.exit_code == 0, result.output
        assert (seen[-1].restart, seen[-1].restart_gateways) == expected


def test_a_recorded_pending_restart_shows_unchanged_then_happens_when_allowed(want):
    record = {"units": [LIVE], "reason": "1 app connected (client 1 on :4001)", "apps": ["client 1 on :4001"]}
    facts = converged(want) | {"clients": {"4001": 1}, "pending": {LIVE: record | {"since": "x"}}}
    waiting = plan(want, facts, Secrets(), policy=restarts.Policy(now=SATURDAY_NOON))
    (task,) = pending(waiting)
    assert not task.changed and waiting.changed == []  # a rerun changes nothing, and still shows it
    allowed = plan(
        want, facts | {"clients": {"4001": 0}}, Secrets(), policy=restarts.Policy(now=SATURDAY_NOON)
    )
    step = systemd(allowed)
    assert LIVE in step["restart"] and step["clear"] == [layout.pending_file(LIVE)]


def test_a_stopped_gateway_starts_whatever_the_clock(want):
    facts = heap_changed(want) | {"clients": {"4001": 1}}
    facts["units"][LIVE] = {"enabled": "enabled", "active": "failed"}
    result = plan(want, facts, Secrets(), policy=restarts.Policy(now=at(11, 0)))
    assert LIVE in systemd(result)["restart"] and not pending(result)


def test_jts_ini_waits_with_its_gateway(want):
    jts = f"{layout.settings_dir('live')}/jts.ini"
    facts = converged(want) | {"clients": {"4001": 1}}
    facts["paths"][jts] = dict(facts["paths"][jts], sha256="0" * 64)
    facts["content"][jts] = "[IBGateway]\nTrustedIPs=10.0.0.1\nApiOnly=true\n[Logon]\nTimeZone=UTC\n"
    result = plan(want, facts, Secrets(), policy=restarts.Policy(now=SATURDAY_NOON))
    assert not [s for s in result.steps() if s["kind"] == "ini"]  # it would stop the gateway
    (task,) = [t for t in result.tasks if t.name == f"file {jts}"]
    assert "pending restart" in task.detail
    now = plan(want, facts, Secrets(), policy=restarts.Policy("now"))
    assert [s["stop"] for s in now.steps() if s["kind"] == "ini"] == [[LIVE]]


def test_the_agent_records_a_pending_restart_privately_and_keeps_its_first_time(tmp_path):
    path = tmp_path / "admin" / "pending" / LIVE
    record = {"units": [LIVE], "reason": "r", "apps": []}
    agent.step_pending({"kind": "pending", "task": "t", "path": str(path), "record": record})
    first = agent.pending_records(str(path.parent))[LIVE]["since"]
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    agent.step_pending(
        {"kind": "pending", "task": "t", "path": str(path), "record": dict(record, reason="s")}
    )
    assert agent.pending_records(str(path.parent))[LIVE] == dict(record, reason="s", since=first)
    path.chmod(0o644)
    assert agent.pending_records(str(path.parent)) == {}


def test_the_agent_counts_established_connections_to_a_port():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert agent.established([port]) == {str(port): 0}
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        accepted = [server.accept()[0] for _ in clients]
        try:
            assert agent.established([port]) == {str(port): 2}
        finally:
            for s in clients + accepted:
                s.close()


def test_restart_policy_is_per_gateway_units(example):
    live = next(g for g in restarts.gateways(example.hosts["gw1"]) if g.mode == "live")
    assert live.units == (LIVE, layout.xvfb_unit("live"), layout.gate_unit("live"))


def test_each_gateway_has_its_own_maintenance_window_after_its_daily_restart(local, example):
    host = local.hosts["local"]
    assert [gw.maintenance() for gw in host.gateways] == ["00:00", "23:45"]  # paper 11:55 PM, live 11:40 PM
    files = {f.path: f.content for f in render_host(local, "local", Secrets(masked=True))}
    timers = [files[f"{layout.UNIT_DIR}/{layout.restart_timer(m)}"] for m in ("paper", "live")]
    assert "OnCalendar=*-*-* 00:00:00 America/New_York" in timers[0]
    assert "OnCalendar=*-*-* 23:45:00 America/New_York" in timers[1]
    assert "Unit=ibgw-restart@live.service" in timers[1]
    service = files[f"{layout.UNIT_DIR}/{layout.RESTART_UNIT}"]
    pending = f"{layout.PENDING_DIR}/ibgw-gateway-%i.service"
    assert f"ConditionPathExists={pending}" in service  # nothing pending: nothing restarts
    assert f"/usr/bin/flock {layout.PENDING_DIR} /bin/systemctl restart" in service  # one at a time
    assert f"ExecStartPost=/bin/rm -f {pending}" in service
    ibgw = {f.path: f.content for f in render_host(example, "gw1", Secrets(masked=True))}
    assert (
        "restart ibgw-xvfb-%i.service ibgw-gateway-%i.service ibgw-gate-%i.service\n"
        in ibgw[f"{layout.UNIT_DIR}/{layout.RESTART_UNIT}"]
    )


def test_a_maintenance_time_can_be_set(example):
    live = example.hosts["gw1"].gateway("live")
    assert live.model_copy(update={"maintenance_time": "02:30"}).maintenance() == "02:30"
