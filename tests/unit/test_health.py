"""How `ibgw health` judges facts and probe results (pure functions)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console

from ibgw_provision import inventory
from ibgw_provision.observe import health, views
from tests.conftest import INVENTORIES


@pytest.mark.parametrize(
    "line,kind",
    [
        ("2026-11-24 09:30:01:123 IBC: Login has failed: unrecognized username or password", "login_failed"),
        ("2026-11-24 09:30:01:123 IBC: Second Factor Authentication dialog timed out", "twofa_timeout"),
        (
            "2026-11-24 09:30:01:123 IBC: Existing session detected: will log in as primary",
            "existing_session",
        ),
        ("2026-11-24 09:30:01,123 ibgw-sim ERROR handler crashed", "error"),
    ],
)
def test_known_ibc_failures_are_named(line, kind):
    report = {"log_findings": []}
    findings = health._judge_logs(
        {"log_lines": [{"file": "/var/log/ibgw/live/ibc.log", "line": line}], "journal_errors": []}, report
    )
    assert report["log_findings"][0]["kind"] == kind
    assert findings[0].severity == "degraded" and findings[0].subject == "/var/log/ibgw/live/ibc.log"


def test_ordinary_log_lines_are_not_findings():
    report = {"log_findings": []}
    lines = [{"file": "f", "line": "2026-11-24 09:30:01,123 ibgw-sim INFO client 1 connected (version 178)"}]
    assert health._judge_logs({"log_lines": lines, "journal_errors": []}, report) == []


@pytest.mark.parametrize(
    "mode,accounts,mismatch",
    [
        ("paper", ["DU123"], False),
        ("paper", ["DF9"], False),
        ("paper", ["DU1", "U2"], True),
        ("live", ["U123"], False),
        ("live", ["F77"], False),
        ("live", ["DU123"], True),
    ],
)
def test_mode_is_checked_by_account_prefix(mode, accounts, mismatch):
    findings = health._judge_accounts(mode, "on the host", accounts)
    assert bool(findings) == mismatch
    assert not findings or (findings[0].severity, findings[0].check) == ("down", "mode")


def test_no_accounts_means_not_logged_in():
    (finding,) = health._judge_accounts("live", "on the host", [])
    assert (finding.severity, finding.check) == ("down", "login")


def test_a_front_failure_with_a_working_gateway_is_degraded_not_down():
    ok = {"ok": True, "accounts": ["DU1"]}
    (finding,) = health._judge_gateway("paper", ok, {"ok": False, "error": "refused"})
    assert finding.severity == "degraded"
    assert [
        f.severity
        for f in health._judge_gateway("paper", {"ok": False, "error": "x"}, {"ok": False, "error": "y"})
    ] == ["down", "down"]


def test_listeners(local):
    host = local.hosts["local"]
    ports = [p for g in host.gateways for p in (g.api_port, g.front_port, g.gate_port)]
    good = {port: {"127.0.0.1"} for port in ports}
    assert health._judge_listeners(host, good) == []
    exposed = good | {host.gateway("paper").api_port: {"0.0.0.0"}}
    assert [f.severity for f in health._judge_listeners(host, exposed)] == ["degraded"]
    missing = {p: a for p, a in good.items() if p != host.gateway("live").front_port}
    (finding,) = health._judge_listeners(host, missing)
    assert (finding.severity, finding.subject) == ("down", "live front")


def test_brief_is_one_nagios_style_line():
    report = {
        "host": "gw1",
        "status": "down",
        "units": [],
        "gateways": [],
        "findings": [
            {
                "severity": "down",
                "check": "mode",
                "subject": "paper gateway",
                "message": "MODE MISMATCH on the host",
            }
        ],
    }
    assert views.brief(report) == "IBGW CRITICAL - gw1: MODE MISMATCH on the host"


def test_a_gate_that_does_not_listen_is_down(local):
    host = local.hosts["local"]
    listening = {p: {"127.0.0.1"} for g in host.gateways for p in (g.api_port, g.front_port, g.gate_port)}
    del listening[host.gateway("paper").gate_port]
    (finding,) = health._judge_listeners(host, listening)
    assert (finding.severity, finding.subject) == ("down", "paper gate")


def test_a_simulator_that_listens_everywhere_is_judged_like_ib_gateway():
    lab = inventory.load(INVENTORIES / "lab.yml")
    host = lab.hosts["gw"]
    front = {g.front_port: {host.front.bind} for g in host.gateways}
    gates = {g.gate_port: {"127.0.0.1"} for g in host.gateways}
    everywhere = {g.api_port: {"0.0.0.0"} for g in host.gateways} | front | gates
    assert health._judge_listeners(host, everywhere) == []  # the firewall is on: it closes them
    firewall_off = host.model_copy(update={"firewall": host.firewall.model_copy(update={"enabled": False})})
    assert {f.check for f in health._judge_listeners(firewall_off, everywhere)} == {"listen"}


def test_a_tripped_gate_interlock_is_down_in_the_schema():
    import dataclasses
    import json
    from pathlib import Path

    import jsonschema

    schema = json.loads((Path(health.__file__).parent / "health.schema.json").read_text())
    findings = health.judge_gates({"live": {"halted": False, "interlock_tripped": True}, "paper": None})
    assert [(f.severity, f.check, f.subject) for f in findings] == [("down", "interlock", "live gate")]
    finding_schema = schema["$defs"]["finding"] | {"$defs": schema["$defs"]}
    jsonschema.validate(dataclasses.asdict(findings[0]), finding_schema)
    assert health.judge_gates({"live": {"halted": True, "interlock_tripped": False}}) == []


def test_pending_restarts_are_reported_and_shown(local):
    host = local.hosts["local"]
    record = {
        "units": ["ibgw-gateway-live.service"],
        "reason": "1 app connected (a)",
        "apps": ["a"],
        "since": "t",
    }
    facts = {
        "units": {},
        "uptime": 100.0,
        "listeners": {
            str(p): ["127.0.0.1"] for g in host.gateways for p in (g.api_port, g.front_port, g.gate_port)
        },
        "firewall": None,
        "resources": {
            "mem_total_mb": 4000,
            "mem_available_mb": 3000,
            "disk_used_pct": {},
            "load1": 0.1,
            "cpus": 2,
        },
        "log_lines": [],
        "journal_errors": [],
        "pending": {"ibgw-gateway-live.service": record},
    }
    report = {"host": "local", "address": "127.0.0.1", "checked_at": 0.0, "units": [], "gateways": []}
    report |= {"firewall": None, "resources": None, "log_findings": [], "pending_restarts": []}
    findings = health._judge_host(host, facts, report)
    assert report["pending_restarts"] == [{"unit": "ibgw-gateway-live.service", **record}]
    report |= {"status": "healthy", "exit_code": 0, "findings": [f.__dict__ for f in findings]}
    schema = json.loads((Path(health.__file__).parent / "health.schema.json").read_text())
    jsonschema.validate({"schema": "ibgw.health/1", "hosts": [report]}, schema)
    out = io.StringIO()
    views.health(Console(file=out, width=200), report)
    assert (
        "PENDING: restart ibgw-gateway-live.service since t: 1 app connected (a), would disconnect a"
        in out.getvalue()
    )


def test_a_front_probe_through_a_bastion_is_named_in_the_report_the_view_and_a_failure():
    source = "jump host 1 (root@198.18.0.2:22)"
    ok = {"ok": True, "server_version": 200, "connection_time": "t", "next_valid_id": 1,
          "accounts": ["DU1"], "round_trip_ms": 0.5}  # fmt: skip
    gateway = {"mode": "paper", "api_port": 4002, "front_port": 4004, "direct": ok, "front": ok}
    report = {"host": "gw", "address": "198.18.0.10", "checked_at": 0.0, "units": [], "firewall": None}
    report |= {"resources": None, "log_findings": [], "pending_restarts": [], "status": "healthy"}
    report |= {"exit_code": 0, "findings": [], "gateways": [gateway | {"front_from": source}]}
    schema = json.loads((Path(health.__file__).parent / "health.schema.json").read_text())
    jsonschema.validate({"schema": "ibgw.health/1", "hosts": [report]}, schema)
    out = io.StringIO()
    views.health(Console(file=out, width=200), report)
    assert f"front probed from {source}" in out.getvalue()
    (finding,) = health._judge_gateway("paper", ok, {"ok": False, "error": "timed out"}, source)
    assert finding.message.endswith(f"(is {source} in the allowlist?)")
