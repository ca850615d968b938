"""The `ibgw` command line."""

from __future__ import annotations

import functools
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from . import inventory
from .errors import InputError, Problem, exit_bad_input
from .gate import cli as gate_cli
from .gate.cli import gate
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


def ssh_options(func):
    """How to reach hosts over SSH: each overrides the inventory's `ssh:` for this run."""
    options = [
        click.option("--user", "ssh_user", help="Log in as this user (root's work then runs through sudo)."),
        click.option("--private-key", type=click.Path(dir_okay=False), help="SSH private key file."),
        click.option(
            "--ssh-config",
            type=click.Path(dir_okay=False),
            help="ssh_config file to honour (default: ~/.ssh/config if it exists).",
        ),
        click.option(
            "-K",
            "--ask-become-pass",
            "ask_become_pass",
            is_flag=True,
            help="Ask for the login user's sudo password (sent on stdin, never in argv).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def ssh_settings(
    ssh_user: str | None,
    private_key: str | None,
    ssh_config: str | None,
    ask_become_pass: bool,
    timeout: float | None,
    accept_new: bool = False,
):
    from .provision.remote import SshOptions

    become = click.prompt("BECOME (sudo) password", hide_input=True, err=True) if ask_become_pass else None
    return SshOptions(
        user=ssh_user,
        private_key=Path(private_key).expanduser() if private_key else None,
        timeout=timeout,
        ssh_config=Path(ssh_config).expanduser() if ssh_config else None,
        accept_new=accept_new,
        become_password=become,
        ask_passphrase=_ask_passphrase,
    )


def _ask_passphrase(path: Path) -> str:
    if not sys.stdin.isatty():
        raise SshError(
            f"SSH key {path} is protected by a passphrase: set IBGW_SSH_PASSPHRASE or "
            "ssh.passphrase (no terminal to ask on)"
        )
    return click.prompt(f"Passphrase for SSH key {path}", hide_input=True, err=True)


def preload_keys(inv, names: list[str], opts) -> None:
    """Ask for key passphrases now, before progress output takes the terminal."""
    from .provision.remote import target
    from .provision.transport import preload_keys as preload

    for name in names:
        preload(target(inv, name, opts.accept_new, opts))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ibgw-provision")
def main() -> None:
    """Provision and run a shared Interactive Brokers Gateway host."""


for command in (sim, gate, pki, tunnel):
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
    "--restart",
    multiple=True,
    metavar="safe|now|MODE[,MODE]",
    help="safe (default): a gateway with apps connected, or live in its trading hours, restarts later "
    "(pending); now: every gateway restarts in this run; paper, live (comma-separated or repeated): "
    "only those gateways restart now, the others stay safe.",
)
@click.option("--forks", default=8, show_default=True, type=click.IntRange(1, 256), help="Hosts at once.")
@click.option(
    "--timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 300),
    help="Seconds to connect and log in over SSH.",
)
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
@ssh_options
@input_errors
def provision(
    pattern: str,
    inventory_path: str,
    check: bool,
    show_diff: bool,
    limit: str | None,
    accept_new: bool,
    verbose: bool,
    restart: tuple[str, ...],
    forks: int,
    timeout: float,
    ssh_user: str | None,
    private_key: str | None,
    ssh_config: str | None,
    ask_become_pass: bool,
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
    restart_mode, restart_gateways = restart_option(inv, names, restart)
    secrets.check(inv, names)
    check_artifacts(inv, names)
    check_pki(inv, names)
    ssh = ssh_settings(ssh_user, private_key, ssh_config, ask_become_pass, timeout, accept_new)
    preload_keys(inv, names, ssh)
    recap = recaps.Recap(
        show_diff=show_diff, verbose=verbose, console=recaps.console_for(sys.stderr) if as_json else None
    )
    with recap.progress(names) as on_event:
        opts = Options(
            check=check,
            accept_new=accept_new,
            restart=restart_mode,
            restart_gateways=restart_gateways,
            lock_timeout=lock_timeout,
            ssh=ssh,
            forks=forks,
            on_event=on_event,
        )
        reports = run(inv, names, opts)
    if as_json:
        click.echo(json.dumps(recaps.as_json(reports, show_diff), indent=2))
        sys.exit(recaps.exit_code(reports))
    sys.exit(recap.show(reports))


@main.command()
@click.argument("host")
@INVENTORY
@click.option("--purge", is_flag=True, help="Also delete the ibkr user, its home, the logs and the audit.")
@click.option("--check", is_flag=True, help="Change nothing; list what would be removed.")
@click.option(
    "--accept-new-host-key",
    "accept_new",
    is_flag=True,
    help="Trust an unknown host key on first contact (a changed key is still refused).",
)
@click.option(
    "--timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 300),
    help="Seconds to connect and log in over SSH.",
)
@ssh_options
@input_errors
def decommission(
    host: str,
    inventory_path: str,
    purge: bool,
    check: bool,
    accept_new: bool,
    timeout: float,
    ssh_user: str | None,
    private_key: str | None,
    ssh_config: str | None,
    ask_become_pass: bool,
) -> None:
    """Stop and remove everything ibgw put on HOST (its manifest). Exit 0 done, 1 failed, 2 bad input."""
    from .provision import recap as recaps
    from .provision.apply import Options
    from .provision.apply import provision as run

    inv = inventory.load(inventory_path)
    name = single_host(inv, host)
    ssh = ssh_settings(ssh_user, private_key, ssh_config, ask_become_pass, timeout, accept_new)
    preload_keys(inv, [name], ssh)
    recap = recaps.Recap(show_diff=False)
    with recap.progress([name]) as on_event:
        opts = Options(
            check=check,
            accept_new=accept_new,
            decommission=True,
            purge=purge,
            ssh=ssh,
            on_event=on_event,
        )
        reports = run(inv, [name], opts)
    sys.exit(recap.show(reports))


def restart_option(inv, names: list[str], values: tuple[str, ...]):
    """--restart as (mode, gateways), or one line naming what is wrong (exit 2)."""
    from .provision import restarts

    try:
        mode, gateways = restarts.parse(values)
    except ValueError as exc:
        raise InputError([Problem("--restart", None, "", str(exc))]) from None
    missing = sorted(gateways - {gw.mode for name in names for gw in inv.hosts[name].gateways})
    if missing:
        raise InputError([Problem("--restart", None, "", f"no selected host has a {missing[0]} gateway")])
    return mode, gateways


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
@click.option("--forks", default=8, show_default=True, type=click.IntRange(1, 256), help="Hosts at once.")
@ssh_options
@input_errors
def health(
    pattern: str,
    inventory_path: str,
    as_json: bool,
    brief: bool,
    timeout: float,
    forks: int,
    ssh_user: str | None,
    private_key: str | None,
    ssh_config: str | None,
    ask_become_pass: bool,
) -> None:
    """Is HOST or GROUP serving? Exit 0 healthy, 1 degraded, 2 down or mode mismatch."""
    from rich.console import Console

    from .observe import health as checks
    from .observe import views

    inv = inventory.load(inventory_path)
    names = select_hosts(inv, pattern, None)
    ssh = ssh_settings(ssh_user, private_key, ssh_config, ask_become_pass, timeout)
    preload_keys(inv, names, ssh)
    with ThreadPoolExecutor(max_workers=min(forks, len(names))) as pool:
        reports = list(pool.map(lambda name: checks.check(inv, name, timeout, ssh), names))
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
@click.option(
    "--timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 300),
    help="Seconds to connect and log in over SSH.",
)
@ssh_options
@input_errors
def monitor(
    host: str,
    inventory_path: str,
    duration: int | None,
    as_json: bool,
    timeout: float,
    ssh_user: str | None,
    private_key: str | None,
    ssh_config: str | None,
    ask_become_pass: bool,
) -> None:
    """Live view, every second, of who is connected through HOST's front, by app."""
    from rich.console import Console
    from rich.live import Live

    from .observe import monitor as mon
    from .observe import views

    inv = inventory.load(inventory_path)
    name = single_host(inv, host)
    count = duration or 2**31 - 1
    ssh = ssh_settings(ssh_user, private_key, ssh_config, ask_become_pass, timeout)
    preload_keys(inv, [name], ssh)
    try:
        if as_json:
            mon.samples(
                inv, name, count, lambda found, gates: click.echo(json.dumps(mon.as_dicts(found))), ssh
            )
        else:
            with Live(
                views.monitor_table(name, []), console=Console(highlight=False), auto_refresh=False
            ) as live:
                mon.samples(
                    inv,
                    name,
                    count,
                    lambda found, gates: live.update(views.monitor_table(name, found), refresh=True),
                    ssh,
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
@click.option(
    "--timeout",
    default=15.0,
    show_default=True,
    type=click.FloatRange(1, 300),
    help="Seconds to connect and log in over SSH.",
)
@ssh_options
@input_errors
def apps(
    inventory_path: str,
    host: str | None,
    as_json: bool,
    timeout: float,
    ssh_user: str | None,
    private_key: str | None,
    ssh_config: str | None,
    ask_become_pass: bool,
) -> None:
    """The app registry; with HOST, also who is connected now through its front."""
    from rich.console import Console

    from .observe import monitor as mon
    from .observe import views

    inv = inventory.load(inventory_path)
    if host:
        name = single_host(inv, host)
        sample: list = []
        ssh = ssh_settings(ssh_user, private_key, ssh_config, ask_become_pass, timeout)
        try:
            mon.samples(inv, name, 1, lambda found, gates: sample.extend([found, gates]), ssh)
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


MODE = click.argument("mode", type=click.Choice(["paper", "live"]))


def display_host(inv, host: str, mode: str) -> str:
    """HOST's name, if it has a `mode` gateway with a display (the ibgw backend)."""
    name = single_host(inv, host)
    if inv.hosts[name].backend != "ibgw":
        raise InputError([inv.problem(("hosts", name, "backend"), "the simulator backend has no display")])
    if mode not in [g.mode for g in inv.hosts[name].gateways]:
        raise InputError([inv.problem(("hosts", name, "gateways"), f"no {mode} gateway on {name}")])
    return name


def fail(message: str) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(1)


@main.command()
@click.argument("host")
@MODE
@INVENTORY
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="PNG file to write (default: HOST-MODE.png)."
)
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 300), help="Seconds.")
@input_errors
def screen(host: str, mode: str, inventory_path: str, output: str | None, timeout: float) -> None:
    """A screenshot of MODE's gateway display on HOST, as PNG (over SSH; nothing listens on the host)."""
    from .observe import screen as scr

    inv = inventory.load(inventory_path)
    name = display_host(inv, host, mode)
    try:
        image = scr.capture(inv, name, mode, timeout)
    except (SshError, AgentError, scr.ScreenError) as exc:
        fail(str(exc))
    path = Path(output or f"{name}-{mode}.png")
    data = image.png()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may show account details
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    click.echo(f"{path}: {image.width}x{image.height} PNG, {len(data)} bytes")


@main.command()
@click.argument("host")
@MODE
@INVENTORY
@click.option(
    "--local-port",
    default=5901,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port on 127.0.0.1 here for the viewer (0: any free port).",
)
@input_errors
def vnc(host: str, mode: str, inventory_path: str, local_port: int) -> None:
    """VNC to MODE's gateway display on HOST for as long as this runs: x11vnc on the host on a root-only
    unix socket, reached through this SSH connection only; stopped on exit or Ctrl-C."""
    import signal

    from .observe import screen as scr

    inv = inventory.load(inventory_path)
    name = display_host(inv, host, mode)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` ends it as Ctrl-C does
    try:
        session = scr.VncSession(inv, name, mode, local_port)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{local_port}: {exc.strerror or exc}")
    try:
        session.start()
        click.echo(f"x11vnc runs on {name}'s {mode} display :{scr.display(inv.hosts[name], mode)}.")
        click.echo(f"  vncviewer 127.0.0.1::{session.port}")
        click.echo("Ctrl-C stops it.")
        session.serve(lambda peer: click.echo(f"viewer connected ({peer})", err=True))
    except KeyboardInterrupt:
        return
    except (SshError, scr.ScreenError) as exc:
        fail(str(exc))
    finally:
        session.close()
    fail(f"{name}: {session.error}")


@main.command("audit")
@click.argument("host", required=False)
@click.option(
    "-i", "--inventory", "inventory_path", type=click.Path(dir_okay=False), help="Inventory (with HOST)."
)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="On the host: a gate config.")
@click.option(
    "--mode", type=click.Choice(["paper", "live"]), help="With HOST: only this gate (default: all)."
)
@click.option("--app", help="Only this app.")
@click.option(
    "--since",
    callback=gate_cli._since,
    metavar="T",
    help="From T: ISO time (local unless it has a zone) or 15m, 2h, 1d.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(1, 300), help="Seconds.")
@input_errors
def audit(
    host: str | None,
    inventory_path: str | None,
    config_path: str | None,
    mode: str | None,
    app: str | None,
    since,
    as_json: bool,
    timeout: float,
) -> None:
    """The gate's audit log: connections (accepted and refused) and order requests (forwarded and
    refused). `audit HOST -i INV` reads it over SSH; `audit --config FILE` on the host itself."""
    import json

    if config_path:
        if host or inventory_path or mode:
            raise click.UsageError("--config reads this machine's log; HOST -i INV reads a host's: not both")
        click.get_current_context().invoke(
            gate_cli.audit, config_path=config_path, app=app, since=since, as_json=as_json
        )
        return
    if not (host and inventory_path):
        raise click.UsageError(
            "give HOST -i INVENTORY (from the operator machine) or --config FILE (on the host)"
        )
    from .observe import audit as remote

    inv = inventory.load(inventory_path)
    name = single_host(inv, host)
    if not inv.hosts[name].front.gate:
        raise InputError(
            [inv.problem(("hosts", name, "front", "gate"), "no gate on this host: no audit log")]
        )
    try:
        rows = remote.read(inv, name, remote.modes(inv.hosts[name], mode), app, since, timeout)
    except (SshError, remote.AuditError) as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    gate_cli._print_table("connections", rows["connections"], ("mode", *gate_cli._CONNECTION_COLUMNS))
    gate_cli._print_table("order requests", rows["orders"], ("mode", *gate_cli._ORDER_COLUMNS))
