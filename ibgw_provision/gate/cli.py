"""`ibgw gate` (run the relay, or halt / resume / status a running one) and `ibgw audit`."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import click

from .. import timefmt
from ..errors import InputError, exit_bad_input
from ..service import runner
from . import admin
from .config import GateConfig, load

log = logging.getLogger("ibgw.gate")
_RELATIVE = re.compile(r"(\d+)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
CONFIG_HELP = "Gate config YAML (rendered from the inventory, one per mode)."


def _load(path: str | None) -> GateConfig:
    """The config at `path`; any problem is printed (file:line: field: message) and exits 2."""
    if path is None:
        raise click.UsageError("--config FILE is required")
    try:
        return load(path)
    except InputError as exc:
        exit_bad_input(exc)


async def _serve(config: GateConfig) -> None:
    from .server import Gate  # loads ibapi's protobuf modules: only when the relay runs
    from .tls import FilesError

    try:
        gate = Gate(config)
    except FilesError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        raise click.ClickException(f"cannot open the audit log {config.audit_db}: {exc}") from None

    async def start() -> None:
        try:
            await gate.start()
        except OSError as exc:
            raise click.ClickException(f"cannot start the gate: {exc}") from None

    await runner.serve(
        start,
        gate.stop,
        log,
        {
            signal.SIGUSR1: lambda: gate.set_halted(True, "SIGUSR1"),
            signal.SIGUSR2: lambda: gate.set_halted(False, "SIGUSR2"),
            signal.SIGHUP: gate.reload_tls,
        },
    )


@click.group(invoke_without_command=True)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def gate(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """Run the TWS API gate in the foreground: a relay between the front and one gateway that
    admits each app by client id and source, and applies its order rules (read-only, limits,
    kill switch), auditing every connection and order request.

    SIGTERM or Ctrl-C exits cleanly; SIGUSR1 halts new orders, SIGUSR2 resumes them; SIGHUP
    re-reads the TLS files (front.tls: CA, CRL, server certificate) for new connections.
    """
    ctx.obj = config_path
    if ctx.invoked_subcommand is not None:
        return
    config = _load(config_path)
    runner.run(_serve(config), "ibgw-gate", verbose, fast=True)


def _ask(ctx: click.Context, config_path: str | None, command: str) -> dict:
    """Send `command` to the gate running with this config; its reply (errors exit 1)."""
    config = _load(config_path or ctx.obj)
    try:
        reply = asyncio.run(admin.command(config.admin_socket, command))
    except (OSError, TimeoutError) as exc:
        raise click.ClickException(f"no gate answers on {config.admin_socket}: {exc}") from None
    if not reply.get("ok"):
        raise click.ClickException(reply.get("error", "the gate refused the command"))
    return reply


CONFIG = click.option("--config", "config_path", type=click.Path(dir_okay=False), help=CONFIG_HELP)


@gate.command()
@CONFIG
@click.pass_context
def halt(ctx: click.Context, config_path: str | None) -> None:
    """Kill switch on: refuse every new order (cancels still pass). Survives restarts."""
    _ask(ctx, config_path, "halt")
    click.echo("halted: new orders are refused")


@gate.command()
@CONFIG
@click.pass_context
def resume(ctx: click.Context, config_path: str | None) -> None:
    """Kill switch off: orders pass again (subject to each app's rules)."""
    _ask(ctx, config_path, "resume")
    click.echo("resumed: orders pass")


@gate.command()
@CONFIG
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def status(ctx: click.Context, config_path: str | None, as_json: bool) -> None:
    """Per-app state of a running gate: connected, last seen, messages in and out, orders."""
    reply = _ask(ctx, config_path, "status")
    del reply["ok"]
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    click.echo(
        f"{reply['mode']} gate on {reply['listen']} -> {reply['upstream']}: trading "
        f"{'HALTED' if reply['halted'] else 'open'}, {reply['refused_connections']} connections refused"
    )
    table = Table(
        "app",
        "client id",
        "state",
        "source",
        "last seen",
        "msgs in",
        "msgs out",
        "orders fwd",
        "orders refused",
        box=None,
        pad_edge=False,
    )
    for app in reply["apps"]:
        state = "connected" if app["connected"] else "-"
        table.add_row(
            app["name"] + (" (read-only)" if app["read_only"] else ""),
            str(app["client_id"]),
            state,
            app["source"] or "-",
            timefmt.ago(app["last_seen"]),
            str(app["messages_in"]),
            str(app["messages_out"]),
            str(app["orders_forwarded"]),
            str(app["orders_refused"]),
        )
    Console().print(table)


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    if match := _RELATIVE.fullmatch(value):
        return datetime.now().astimezone() - timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO time (2025-06-02T14:30) nor relative (15m, 2h, 1d)"
        ) from None


_CONNECTION_COLUMNS = ("started", "app", "client_id", "source", "version", "outcome", "ended", "reason")
_ORDER_COLUMNS = (
    "at",
    "app",
    "client_id",
    "request",
    "order_id",
    "symbol",
    "sec_type",
    "action",
    "quantity",
    "order_type",
    "limit_price",
    "decision",
    "reason",
)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text[:19].replace("T", " ") + "Z" if re.fullmatch(r"\d{4}-\d\d-\d\dT.*Z", text) else text


def _print_table(title: str, rows: list[dict], columns: tuple[str, ...]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=f"{title} ({len(rows)})", title_justify="left", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    Console().print(table)


@click.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--app", help="Only this app.")
@click.option(
    "--since",
    callback=_since,
    metavar="T",
    help="From T: ISO time (local unless it has a zone) or 15m, 2h, 1d.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit(config_path: str, app: str | None, since: datetime | None, as_json: bool) -> None:
    """Show the gate's audit log: connections (accepted and refused) and order requests
    (forwarding: committed, maybe not sent; forwarded: the gateway's TCP took it; refused)."""
    from .audit import query

    config = _load(config_path)
    try:
        rows = query(Path(config.audit_db), app, since)
    except (FileNotFoundError, sqlite3.Error) as exc:
        raise click.ClickException(f"cannot read the audit log {config.audit_db}: {exc}") from None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _print_table("connections", rows["connections"], _CONNECTION_COLUMNS)
    _print_table("order requests", rows["orders"], _ORDER_COLUMNS)
