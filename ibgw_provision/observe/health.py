"""`ibgw health`: does the host serve every app? From systemd and sockets down to a real TWS API logon.

Host facts come in one SSH round trip. Each gateway is then probed twice with
a real TWS API handshake: directly on the host (through the SSH connection,
as a local client of the gateway) and through the front, from where SSH comes
from: the last jump host when there is one (an admin address), else this machine.
A finding is `degraded` (exit 1) or `down` (exit 2); none means healthy (0).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass

from ..inventory.model import Gateway, Host, Inventory
from ..provision import layout, state
from ..provision.remote import AgentError, SshOptions, call_agent, target
from ..provision.transport import SshError, Transport
from ..tws.probe import ProbeError, ProbeResult, probe
from . import certificates

SCHEMA = "ibgw.health/1"
EXIT = {"healthy": 0, "degraded": 1, "down": 2}
# IBC's and IB Gateway's own words for the failures users meet most.
KNOWN_FAILURES = [
    (
        "login_failed",
        re.compile(r"login (has )?failed|invalid (username|password)|unrecognized username", re.I),
    ),
    (
        "twofa_timeout",
        re.compile(r"second factor authentication.*(timed out|timeout)|2fa.*timed? ?out", re.I),
    ),
    ("existing_session", re.compile(r"existing session detected", re.I)),
    ("error", re.compile(r"\b(ERROR|SEVERE|CRITICAL)\b|Exception\b")),
]


@dataclass(frozen=True)
class Finding:
    severity: str  # degraded | down
    check: str
    subject: str
    message: str


def check(inv: Inventory, name: str, timeout: float, ssh: SshOptions | None = None) -> dict:
    """The health report of one host, as the documented JSON schema."""
    host = inv.hosts[name]
    report: dict = {
        "host": name,
        "address": host.address,
        "checked_at": time.time(),
        "units": [],
        "gateways": [],
        "firewall": None,
        "resources": None,
        "log_findings": [],
        "pending_restarts": [],
    }
    findings: list[Finding] = []
    direct: dict[str, dict] = {}
    fronts: dict[str, dict] = {}
    facts = None
    tls = certificates.probe_context(inv) if host.front.tls else None
    transport = Transport(target(inv, name, False, ssh), connect_timeout=timeout)
    try:
        with transport:
            try:
                facts = call_agent(transport, _request(host))
                direct = {
                    gw.mode: _direct(transport, host.health.probe_client_id, gw.api_port, timeout)
                    for gw in host.gateways
                }
            finally:  # the front is probed even when the agent fails, while the connection is open
                fronts = {
                    gw.mode: _front(host, gw.front_port, timeout, tls, transport) for gw in host.gateways
                }
    except (SshError, AgentError) as exc:
        findings.append(Finding("down", "ssh", name, str(exc)))
    if facts:
        findings += _judge_host(host, facts, report)
    server_pem = facts.get("tls_cert") if facts else None
    findings += [
        Finding(sev, "certificate", subject, msg)
        for sev, subject, msg in certificates.findings(inv, name, server_pem)
    ]
    source = transport.last_jump or "this machine"
    for gw in host.gateways:
        front = fronts.get(gw.mode) or _front(host, gw.front_port, timeout, tls, transport)
        report["gateways"].append(
            {
                "mode": gw.mode,
                "api_port": gw.api_port,
                "front_port": gw.front_port,
                "direct": direct.get(gw.mode),
                "front": front,
                "front_from": source,
            }
        )
        findings += _judge_gateway(gw.mode, direct.get(gw.mode), front, source)
    status = max((f.severity for f in findings), key=lambda severity: EXIT[severity], default="healthy")
    report.update(status=status, exit_code=EXIT[status], findings=[asdict(f) for f in findings])
    return report


def front_address(host: Host) -> str:
    return host.address if host.front.bind in ("0.0.0.0", "::") else host.front.bind


def _request(host: Host) -> dict:
    return {
        "op": "health",
        "units": state.units(host),
        "firewall": host.firewall.enabled,
        "disk_paths": ["/", "/var"],
        "log_minutes": host.health.log_minutes,
        "log_files": [f"{layout.log_dir(g.mode)}/*.log" for g in host.gateways],
        "tls_cert": layout.TLS_FILES["cert"] if host.front.tls else None,
        "gates": {g.mode: g.gate_metrics_port for g in host.gateways} if host.front.gate else {},
        "pending": layout.PENDING_DIR,
    }


def _front(host: Host, port: int, timeout: float, tls, transport: Transport) -> dict:
    """Probe a front port the way SSH goes: through the last jump host's SSH connection when the
    host is reached through one (its source is then the jump host, an admin address), else directly
    from this machine."""
    client_id, address = host.health.probe_client_id + 1, front_address(host)
    if not transport.jumps:
        return _probe(client_id, port, timeout, address=address, tls=tls)
    if isinstance(tls, str):  # the probe's certificate is missing
        return {"ok": False, "error": tls}
    try:
        sock = transport.forward_from_jump(address, port)
    except SshError as exc:
        return {"ok": False, "error": str(exc)}
    return _probe(client_id, port, timeout, address=address, sock=sock, tls=tls)


def _direct(transport: Transport, client_id: int, port: int, timeout: float) -> dict:
    """Probe the gateway as a client on the host itself, through the SSH connection."""
    try:
        sock = transport.forward("127.0.0.1", port)
    except SshError:
        return {"ok": False, "error": f"connection to 127.0.0.1:{port} on the host refused"}
    return _probe(client_id, port, timeout, sock=sock)


def _probe(
    client_id: int, port: int, timeout: float, address: str = "127.0.0.1", sock=None, tls=None
) -> dict:
    if isinstance(tls, str):  # the probe's certificate is missing: say so instead of probing
        return {"ok": False, "error": tls}
    try:
        result = asyncio.run(probe(address, port, client_id, timeout=timeout, sock=sock, tls=tls))
    except ProbeError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, **_probe_fields(result)}


def _probe_fields(r: ProbeResult) -> dict:
    return {
        "server_version": r.server_version,
        "connection_time": r.connection_time,
        "next_valid_id": r.next_valid_id,
        "accounts": list(r.accounts),
        "round_trip_ms": r.round_trip * 1000,
    }


def _judge_host(host: Host, facts: dict, report: dict) -> list[Finding]:
    findings = []
    for name, unit in facts["units"].items():
        up_for = facts["uptime"] - unit["since"]
        report["units"].append(
            {"name": name, **unit, "up_for_s": round(up_for) if unit["active"] == "active" else 0}
        )
        if unit["active"] != "active":
            findings.append(Finding("down", "unit", name, f"{name} is {unit['active']} ({unit['sub']})"))
        elif unit["restarts"] >= host.health.restart_loop and up_for < 600:
            findings.append(
                Finding(
                    "degraded",
                    "unit",
                    name,
                    f"restart loop: {unit['restarts']} restarts, up for {up_for:.0f}s",
                )
            )
    findings += _judge_listeners(host, {int(p): set(a) for p, a in facts["listeners"].items()})
    report["firewall"] = {"enabled": host.firewall.enabled, "loaded": facts["firewall"]}
    if host.firewall.enabled and not facts["firewall"]:
        findings.append(
            Finding("degraded", "firewall", "inet ibgw", "the nftables table inet ibgw is not loaded")
        )
    findings += judge_gates(facts.get("gates") or {})
    report["resources"] = facts["resources"]
    findings += _judge_resources(host, facts["resources"])
    findings += _judge_logs(facts, report)
    report["pending_restarts"] = [
        {"unit": unit, **record} for unit, record in facts.get("pending", {}).items()
    ]
    return findings


def loopback_only(host: Host, gw: Gateway) -> bool:
    """Whether the gateway binds 127.0.0.1 only: the simulator can; IB Gateway cannot."""
    return host.backend == "simulator" and gw.simulator.listen == "loopback"


def _judge_listeners(host: Host, listening: dict[int, set[str]]) -> list[Finding]:
    findings = []
    for gw in host.gateways:
        addresses = listening.get(gw.api_port, set())
        if not addresses:
            findings.append(
                Finding("down", "listen", f"{gw.mode} gateway", f"nothing listens on port {gw.api_port}")
            )
        elif loopback_only(host, gw) and addresses != {"127.0.0.1"}:
            findings.append(
                Finding(
                    "degraded",
                    "listen",
                    f"{gw.mode} gateway",
                    f"port {gw.api_port} listens on {', '.join(sorted(addresses))}, not only 127.0.0.1",
                )
            )
        elif not host.firewall.enabled and addresses - {"127.0.0.1", "::1"}:
            findings.append(
                Finding(
                    "degraded",
                    "listen",
                    f"{gw.mode} gateway",
                    f"port {gw.api_port} is open on {', '.join(sorted(addresses))} and the firewall "
                    "is off (IB Gateway cannot bind to loopback only)",
                )
            )
        if host.front.gate and "127.0.0.1" not in listening.get(gw.gate_port, set()):
            findings.append(
                Finding("down", "listen", f"{gw.mode} gate", f"nothing listens on 127.0.0.1:{gw.gate_port}")
            )
        front = listening.get(gw.front_port, set())
        if not front & {host.front.bind, "0.0.0.0", "::"}:
            findings.append(
                Finding(
                    "down",
                    "listen",
                    f"{gw.mode} front",
                    f"nothing listens on {host.front.bind}:{gw.front_port}",
                )
            )
    return findings


def judge_gates(gates: dict[str, dict | None]) -> list[Finding]:
    """A gate whose paper/live interlock tripped refuses every app: down."""
    return [
        Finding(
            "down",
            "interlock",
            f"{mode} gate",
            f"paper/live interlock tripped: the {mode} gateway reports accounts of the other mode; "
            "the gate refuses every app (see ibgw gate status)",
        )
        for mode, flags in sorted(gates.items())
        if flags and flags.get("interlock_tripped")
    ]


def _judge_resources(host: Host, res: dict) -> list[Finding]:
    findings = [
        Finding("degraded", "disk", path, f"{used}% used (limit {host.health.disk_max_pct}%)")
        for path, used in res["disk_used_pct"].items()
        if used > host.health.disk_max_pct
    ]
    if res["mem_available_mb"] < 0.05 * res["mem_total_mb"]:
        findings.append(Finding("degraded", "memory", "host", f"only {res['mem_available_mb']} MB available"))
    if res["load1"] > 2 * res["cpus"]:
        findings.append(Finding("degraded", "load", "host", f"load {res['load1']:.1f} on {res['cpus']} CPUs"))
    return findings


def _judge_logs(facts: dict, report: dict) -> list[Finding]:
    seen: dict[tuple[str, str], int] = {}
    for entry in facts["log_lines"]:
        kind = next((k for k, pattern in KNOWN_FAILURES if pattern.search(entry["line"])), None)
        if kind:
            report["log_findings"].append({"kind": kind, **entry})
            seen[(kind, entry["file"])] = seen.get((kind, entry["file"]), 0) + 1
    for line in facts["journal_errors"]:
        report["log_findings"].append({"kind": "journal_error", "file": "journal", "line": line})
        seen[("journal_error", "journal")] = seen.get(("journal_error", "journal"), 0) + 1
    names = {
        "login_failed": "IB login failed",
        "twofa_timeout": "second factor (2FA) timed out",
        "existing_session": "existing session detected",
        "error": "errors",
        "journal_error": "unit errors",
    }
    return [
        Finding("degraded", "logs", file, f"{names[kind]}: {count} line(s) in the last minutes")
        for (kind, file), count in seen.items()
    ]


def _judge_gateway(
    mode: str, direct: dict | None, front: dict, source: str = "this machine"
) -> list[Finding]:
    findings = []
    if direct is not None and not direct["ok"]:
        findings.append(
            Finding("down", "api", f"{mode} gateway", f"TWS API probe on the host failed: {direct['error']}")
        )
    for where, result in (("on the host", direct), ("through the front", front)):
        if result and result["ok"]:
            findings += _judge_accounts(mode, where, result["accounts"])
    if not front["ok"]:
        findings.append(
            Finding(
                "degraded" if direct and direct["ok"] else "down",
                "api",
                f"{mode} front",
                f"TWS API probe through the front failed: {front['error']} (is {source} in the allowlist?)",
            )
        )
    return findings


def _judge_accounts(mode: str, where: str, accounts: list[str]) -> list[Finding]:
    if not accounts:
        return [Finding("down", "login", f"{mode} gateway", f"no managed accounts {where}: not logged in")]
    paper = [a for a in accounts if a.startswith("D")]
    wrong = [a for a in accounts if a not in paper] if mode == "paper" else paper
    if wrong:
        return [
            Finding(
                "down",
                "mode",
                f"{mode} gateway",
                f"MODE MISMATCH {where}: the {mode} gateway reports "
                f"{'live' if mode == 'paper' else 'paper'} account(s) {', '.join(wrong)}",
            )
        ]
    return []
