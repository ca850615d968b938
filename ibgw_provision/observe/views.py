"""How `ibgw health`, `ibgw apps` and `ibgw monitor` show things to people."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import timefmt

STATUS_STYLE = {"healthy": "green", "degraded": "yellow", "down": "red"}
NAGIOS = {"healthy": "OK", "degraded": "WARNING", "down": "CRITICAL"}


def brief(report: dict) -> str:
    """One line for cron and Nagios-style checks."""
    problems = "; ".join(f["message"] for f in report["findings"])
    ok = sum(bool(g["direct"] and g["direct"]["ok"]) for g in report["gateways"])
    detail = (
        problems or f"{ok}/{len(report['gateways'])} gateways answer, {len(report['units'])} units active"
    )
    return f"IBGW {NAGIOS[report['status']]} - {report['host']}: {detail}"


def health(console: Console, report: dict) -> None:
    status = report["status"]
    console.print(
        Text.assemble(
            ("● ", STATUS_STYLE[status]),
            (report["host"], "bold"),
            f" {report['address']}: ",
            (status.upper(), STATUS_STYLE[status]),
        )
    )
    units = Table("unit", "state", "restarts", "up", box=None, pad_edge=False)
    for u in report["units"]:
        style = "green" if u["active"] == "active" else "red"
        units.add_row(
            u["name"],
            Text(f"{u['active']} ({u['sub']})", style),
            str(u["restarts"]),
            timefmt.uptime(u["up_for_s"]),
        )
    console.print(units)
    gateways = Table("gateway", "probe", "version", "accounts", "reqCurrentTime", box=None, pad_edge=False)
    for g in report["gateways"]:
        for where in ("direct", "front"):
            p = g[where]
            if p is None:
                continue
            port = g["api_port"] if where == "direct" else g["front_port"]
            row = (
                [str(p["server_version"]), ",".join(p["accounts"]), f"{p['round_trip_ms']:.1f} ms"]
                if p["ok"]
                else [Text(p["error"], "red"), "", ""]
            )
            gateways.add_row(f"{g['mode']}", f"{where} :{port}", *row)
    console.print(gateways)
    sources = {g.get("front_from") for g in report["gateways"]} - {None, "this machine"}
    for source in sorted(sources):  # through a bastion: its SSH connection opened the front probe
        console.print(f"front probed from {source}")
    if report["resources"]:
        r = report["resources"]
        disks = ", ".join(f"{p} {pct}%" for p, pct in r["disk_used_pct"].items())
        console.print(
            f"memory {r['mem_available_mb']}/{r['mem_total_mb']} MB free, disk {disks}, load {r['load1']:.2f}"
        )
    for p in report.get("pending_restarts", ()):
        apps = f", would disconnect {', '.join(p['apps'])}" if p.get("apps") else ""
        console.print(
            Text(
                f"PENDING: restart {', '.join(p['units'])} since {p.get('since', '?')}: {p['reason']}{apps}",
                "magenta",
            )
        )
    for f in report["findings"]:
        console.print(
            Text(f"{f['severity'].upper()}: {f['subject']}: {f['message']}", STATUS_STYLE[f["severity"]])
        )


def monitor_table(host: str, found: list) -> Table:
    table = Table(
        "mode",
        "source",
        "app",
        "open",
        "total",
        "bytes in",
        "bytes out",
        "last seen",
        title=f"{host}: connections through the front (Ctrl-C to stop)",
        title_justify="left",
    )
    for s in found:
        app = Text(", ".join(s.apps)) if s.apps else Text("unknown (refused)", "red")
        table.add_row(
            s.mode,
            s.address,
            app,
            Text(str(s.connections), "green" if s.connections else ""),
            str(s.total),
            f"{s.bytes_in:,}",
            f"{s.bytes_out:,}",
            timefmt.ago(s.last_seen),
        )
    return table


def apps_table(rows: list[dict], live: bool) -> Table:
    columns = ["host", "app", "client id", "modes", "sources", "read only"]
    table = Table(
        *(columns + (["connected", "last seen", "msgs in/out", "seen by"] if live else [])),
        box=None,
        pad_edge=False,
    )
    for r in rows:
        cells = [
            r["host"],
            r["app"],
            str(r["client_id"]),
            ",".join(r["modes"]),
            ", ".join(r["sources"]),
            "yes" if r["read_only"] else "no",
        ]
        if live:
            messages = f"{r['messages_in']}/{r['messages_out']}" if r["seen_by"] == "gate" else "-"
            cells += [
                Text("yes", "green") if r["connected"] else "no",
                timefmt.ago(r["last_seen"]),
                messages,
                r["seen_by"],
            ]
        table.add_row(*cells)
    return table
