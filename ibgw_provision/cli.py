"""The `ibgw` command line."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from . import inventory, secrets
from .errors import EXIT_BAD_INPUT, InputError
from .render import render_host
from .sim.cli import sim


def input_errors(func):
    """Bad input: print each problem (file:line: field: message) and exit 2, no traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except InputError as exc:
            for problem in exc.problems:
                click.secho(f"error: {problem}", fg="red", err=True)
            sys.exit(EXIT_BAD_INPUT)

    return wrapper


INVENTORY = click.option("-i", "--inventory", "inventory_path", required=True,
                         type=click.Path(dir_okay=False), help="Inventory YAML file.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ibgw-provision")
def main() -> None:
    """Provision and run a shared Interactive Brokers Gateway host."""


main.add_command(sim)


@main.command()
@INVENTORY
@click.option("--secrets", "check_secrets", is_flag=True,
              help="Also resolve every secret reference (env vars, files) on this machine.")
@input_errors
def validate(inventory_path: str, check_secrets: bool) -> None:
    """Check an inventory; every error names its file, line and field."""
    inv = inventory.load(inventory_path)
    if check_secrets:
        secrets.check(inv)
    for name, host in inv.hosts.items():
        modes = ", ".join(f"{g.mode}:{g.api_port}->{g.front_port}" for g in host.gateways)
        click.echo(f"{name}: {host.backend} backend, {host.front.kind} front, gateways {modes}, {len(host.apps)} apps")
    click.echo(f"{inventory_path}: ok")


@main.command()
@click.argument("host")
@INVENTORY
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Directory to write into.")
@input_errors
def render(host: str, inventory_path: str, out_dir: str) -> None:
    """Write every file HOST gets under DIR, at its target path. Secrets are masked."""
    inv = inventory.load(inventory_path)
    if host not in inv.hosts:
        raise InputError([inv.problem(("hosts",), f"no host named {host!r} (have: {', '.join(inv.hosts)})")])
    for f in render_host(inv, host, secrets.Secrets(masked=True)):
        target = Path(out_dir) / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f.content, encoding="utf-8")
        os.chmod(target, f.mode)
        click.echo(f"{f.mode:04o} {f.owner}:{f.group} {f.path}{'  (secret, masked)' if f.secret else ''}")


@main.command()
@click.argument("pattern")
@INVENTORY
@click.option("--check", is_flag=True, help="Change nothing; list what would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Show unified diffs of files (secrets masked).")
@click.option("--limit", help="Only hosts matching this name or glob, within PATTERN.")
@click.option("--accept-new-host-key", "accept_new", is_flag=True,
              help="Trust an unknown host key on first contact (a changed key is still refused).")
@click.option("-v", "--verbose", is_flag=True, help="Also list tasks that were already ok.")
@input_errors
def provision(pattern: str, inventory_path: str, check: bool, show_diff: bool, limit: str | None,
              accept_new: bool, verbose: bool) -> None:
    """Converge HOST, GROUP or 'all' to the inventory. Exit 0 converged, 1 a host failed, 2 bad input."""
    from .provision import Options, provision as run
    from .recap import Recap
    from .state import check_artifacts

    inv = inventory.load(inventory_path)
    names = select_hosts(inv, pattern, limit)
    secrets.check(inv, names)
    check_artifacts(inv, names)
    recap = Recap(show_diff=show_diff, verbose=verbose)
    with recap.progress(names) as on_event:
        reports = run(inv, names, Options(check=check, accept_new=accept_new, on_event=on_event))
    sys.exit(recap.show(reports))


def select_hosts(inv, pattern: str, limit: str | None) -> list[str]:
    names = inv.select(pattern)
    if limit:
        names = [n for n in names if n in inv.select(limit)]
    if not names:
        raise InputError([inv.problem(("hosts",), f"no host matches {pattern!r}"
                                      + (f" with --limit {limit!r}" if limit else ""))])
    return names
