"""The `ibgw` command line."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path

import click

from . import inventory
from .errors import InputError, exit_bad_input
from .gate.cli import audit, gate
from .inventory import secrets
from .pki.cli import pki
from .provision.remote import AgentError
from .provision.render import render_host
from .provision.transport import SshError
from .sim.cli import sim
from .tunnel.cli import tunnel


def input_errors(func):
    """Bad input: print each problem (file:line: field: message) and exit 2, no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            exit_bad_input(exc)

    return wrapper


INVENTORY = click.option(
    "-i",
    "--inventory",
    "inventory_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Inventory YAML file.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ibgw-provision")
def main() -> None:
    """Provision and run a shared Interactive Brokers Gateway host."""


for command in (sim, gate, audit, pki, tunnel):
    main.add_command(command)


@main.command()
@INVENTORY
@click.option(
    "--secrets",
    "check_secrets",
    is_flag=True,
    help="Also resolve every secret reference (env vars, files) on this machine.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (schema ibgw.validate/1).")
@input_errors
def validate(inventory_path: str, check_secrets: bool, as_json: bool) -> None:
    """Check an inventory; every error names its file, line and field."""
    try:
        inv = inventory.load(inventory_path)
        if check_secrets:
            from .inventory.preflight import check_pki

            secrets.check(inv)
            check_pki(inv)
    except InputError as exc:
        if as_json:
            click.echo(json.dumps(validate_json(inventory_path, None, exc), indent=2))
        raise
    warnings = inventory.warnings(inv)
    for warning in warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if as_json:
        click.echo(json.dumps(validate_json(inventory_path, inv, None, warnings), indent=2))
        return
    for name, host in inv.hosts.items():
        modes = ", ".join(f"{g.mode}:{g.api_port}->{g.front_port}" for g in host.gateways)
        click.echo(
            f"{name}: {host.backend} backend, {host.front.kind} front, gateways {modes}, "
            f"{len(host.apps)} apps"
        )
    click.echo(f"{inventory_path}: ok")


def validate_json(path: str, inv, error: InputError | None, warnings: list[str] = ()) -> dict:  # type: ignore[assignment]
    """`validate --json`: schema ibgw.validate/1; keys are only ever added within a version."""
    hosts = [
        {
            "name": name,
            "backend": h.backend,
            "front": h.front.kind,
            "gate": h.front.gate,
            "gateways": [
                {"mode": g.mode, "api_port": g.api_port, "front_port": g.front_port, "java_heap": g.java_heap}
                for g in h.gateways
            ],
            "apps": [a.name for a in h.apps],
        }
        for name, h in (inv.hosts.items() if inv else ())
    ]
    errors = [
        {"file": p.file, "line": p.line, "field": p.field, "message": p.message}
        for p in (error.problems if error else ())
    ]
    return {
        "schema": "ibgw.validate/1",
        "inventory": path,
        "ok": error is None,
        "errors": errors,
        "warnings": list(warnings),
        "hosts": hosts,
    }


@main.command()
@click.argument("host")
@INVENTORY
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to write into."
)
@click.option(
    "--json", "as_json", is_flag=True, help="List the files written as JSON (schema ibgw.render/1)."
)
@input_errors
def render(host: str, inventory_path: str, out_dir: str, as_json: bool) -> None:
    """Write every file HOST gets under DIR, at its target path. Secrets are masked."""
    inv = inventory.load(inventory_path)
    written = []
    for f in render_host(inv, single_host(inv, host), secrets.Secrets(masked=True)):
        target = Path(out_dir) / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content, encoding="utf-8")
        os.chmod(target, f.mode)
        written.append(
            {
                "path": f.path,
                "mode": f"{f.mode:04o}",
                "owner": f.owner,
                "group": f.group,
                "secret": f.secret,
                "written": str(target),
            }
        )
        if not as_json:
            click.echo(f"{f.mode:04o} {f.owner}:{f.group} {f.path}{'  (secret, masked)' if f.secret else ''}")
    if as_json:
        click.echo(
            json.dumps({"schema": "ibgw.render/1", "host": host, "out": out_dir, "files": written}, indent=2)
        )


@main.command()
@click.argument("pattern")
@INVENTORY
@click.option("--check", is_flag=True, help="Change nothing; list what would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Show unified diffs of files (secrets masked).")
@click.option("--limit", help="Only hosts matching this name or glob, within PATTERN.")
@click.option(
    "--accept-new-host-key",
    "accept_new",
    is_flag=True,
    help="Trust an unknown host key on first contact (a changed key is still refused).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also list tasks that were already ok.")
@click.option(
    "--lock-timeout",
    default=300,
    show_default=True,
    type=click.IntRange(0, 3600),
    help="Seconds the host's apt waits for the dpkg lock (cloud-init, unattended-upgrades).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run as JSON (schema ibgw.provision/1) on stdout; progress goes to stderr.",
)
@input_errors
def provision(
    pattern: str,
    inventory_path: str,
    check: bool,
    show_diff: bool,
    limit: str | None,
    accept_new: bool,
    verbose: bool,
    lock_timeout: int,
    as_json: bool,
) -> None:
    """Converge HOST, GROUP or 'all' to the inventory. Exit 0 converged, 1 a host failed or was
    unreachable, 2 bad input (or a host that cannot hold what the inventory asks)."""
    from .inventory.preflight import check_artifacts, check_pki
    from .provision import recap as recaps
    from .provision.apply import Options
    from .provision.apply import provision as run

    inv = inventory.load(inventory_path)
    names = select_hosts(inv, pattern, limit)
    secrets.check(inv, names)
    check_artifacts(inv, names)
    check_pki(inv, names)
    recap = recaps.Recap(
        show_diff=show_diff, verbose=verbose, console=recaps.console_for(sys.stderr) if as_json else None
    )
    with recap.progress(names) as on_event:
        reports = run(
            inv,
            names,
            Options(check=check, accept_new=accept_new, lock_timeout=lock_timeout, on_event=on_event),
        )
    if as_json:
        click.echo(json.dumps(recaps.as_json(reports, show_diff), indent=2))
        sys.exit(recaps.exit_code(reports))
    sys.exit(recap.show(reports))


def select_hosts(inv, pattern: str, limit: str | None) -> list[str]:
    names = inv.select(pattern)
    if limit:
        names = [n for n in names if n in inv.select(limit)]
    if not names:
        raise InputError(
            [
                inv.problem(
                    ("hosts",), f"no host matches {pattern!r}" + (f" with --limit {limit!r}" if limit else "")
                )
            ]
        )
    return names


@main.command()
@click.argument("pattern")
@INVENTORY
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema ibgw.health/1).")
@click.option("--brief", is_flag=True, help="One line per host, for cron and Nagios-style checks.")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.1, 300),
    help="Seconds for SSH and for each TWS API probe.",
)
@input_errors
def health(pattern: str, inventory_path: str, as_json: bool, brief: bool, timeout: float) -> None:
    """Is HOST or GROUP serving? Exit 0 healthy, 1 degraded, 2 down or mode mismatch."""
    from rich.console import Console

    from .observe import health as checks
    from .observe import views

    inv = inventory.load(inventory_path)
    reports = [checks.check(inv, name, timeout) for name in select_hosts(inv, pattern, None)]
    if as_json:
        click.echo(json.dumps({"schema": checks.SCHEMA, "hosts": reports}, indent=2))
    else:
        console = Console(highlight=False)
        for report in reports:
            click.echo(views.brief(report)) if brief else views.health(console, report)
    sys.exit(max(r["exit_code"] for r in reports))


@main.command()
@click.argument("host")
@INVENTORY
@click.option("--duration", type=click.IntRange(1), help="Stop after this many seconds (default: at Ctrl-C).")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per sample instead of a live table.")
@input_errors
def monitor(host: str, inventory_path: str, duration: int | None, as_json: bool) -> None:
    """Live view, every second, of who is connected through HOST's front, by app."""
    from rich.console import Console
    from rich.live import Live

    from .observe import monitor as mon
    from .observe import views

    inv = inventory.load(inventory_path)
    name = single_host(inv, host)
    count = duration or 2**31 - 1
    try:
        if as_json:
            mon.samples(inv, name, count, lambda found, gates: click.echo(json.dumps(mon.as_dicts(found))))
        else:
            with Live(
                views.monitor_table(name, []), console=Console(highlight=False), auto_refresh=False
            ) as live:
                mon.samples(
                    inv,
                    name,
                    count,
                    lambda found, gates: live.update(views.monitor_table(name, found), refresh=True),
                )
    except KeyboardInterrupt:
        pass
    except (SshError, AgentError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)


@main.command()
@INVENTORY
@click.argument("host", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@input_errors
def apps(inventory_path: str, host: str | None, as_json: bool) -> None:
    """The app registry; with HOST, also who is connected now through its front."""
    from rich.console import Console

    from .observe import monitor as mon
    from .observe import views

    inv = inventory.load(inventory_path)
    if host:
        name = single_host(inv, host)
        sample: list = []
        try:
            mon.samples(inv, name, 1, lambda found, gates: sample.extend([found, gates]))
        except (SshError, AgentError) as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(1)
        rows = [{"host": name, **r} for r in mon.app_states(inv.hosts[name], *sample)]
    else:
        rows = [
            {
                "host": n,
                "app": a.name,
                "client_id": a.client_id,
                "modes": list(a.modes),
                "sources": list(a.sources),
                "read_only": a.read_only,
            }
            for n, h in inv.hosts.items()
            for a in h.apps
        ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        rows = [r | {"modes": r.get("modes", [r.get("mode")])} for r in rows]
        Console(highlight=False).print(views.apps_table(rows, live=bool(host)))


def single_host(inv, name: str) -> str:
    if name not in inv.hosts:
        raise InputError([inv.problem(("hosts",), f"no host named {name!r} (have: {', '.join(inv.hosts)})")])
    return name
