"""`ibgw pki`: the app CA on the operator machine (init, issue, revoke, list)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from .. import inventory
from ..errors import InputError, exit_bad_input
from ..inventory.model import PROBE_APP, Inventory
from .ca import APP_DAYS, Pki, PkiError, expiring

INVENTORY = click.option(
    "-i",
    "--inventory",
    "inventory_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Inventory YAML file (pki.dir names the CA's directory).",
)


def _load(path: str) -> tuple[Inventory, Pki]:
    try:
        inv = inventory.load(path)
    except InputError as exc:
        exit_bad_input(exc)
    return inv, Pki(inv.pki_dir())


def _pki_errors(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PkiError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def tls_hosts(inv: Inventory) -> list[str]:
    return [name for name, host in inv.hosts.items() if host.front.tls]


def app_names(inv: Inventory) -> set[str]:
    return {app.name for host in inv.hosts.values() for app in host.apps}


@click.group()
def pki() -> None:
    """ibgw's app CA (front.tls): each app connects with its own certificate."""


@pki.command()
@INVENTORY
@click.option("--renew", is_flag=True, help="Re-issue the fronts' server certificates that exist.")
@_pki_errors
def init(inventory_path: str, renew: bool) -> None:
    """Create the app CA and its CRL (once), and a server certificate for each front.tls host."""
    inv, ca = _load(inventory_path)
    created = ca.init(Path(inventory_path).stem)
    click.echo(f"{'created' if created else 'kept'} the app CA in {ca.dir}")
    if created or not (ca.app_dir(PROBE_APP) / "cert.pem").exists():
        ca.issue_app(PROBE_APP)  # `ibgw health` probes each front.tls front with it
        click.echo(f"certificate for ibgw health's front probe: {ca.app_dir(PROBE_APP)}")
    for name in tls_hosts(inv):
        if renew or not (ca.server_dir(name) / "cert.pem").exists():
            directory = ca.issue_server(name, inv.hosts[name].address)
            click.echo(f"server certificate for {name} ({inv.hosts[name].address}): {directory}")


@pki.command()
@INVENTORY
@click.argument("app")
@click.option("--days", type=click.IntRange(1, 3650), default=APP_DAYS, show_default=True)
@_pki_errors
def issue(inventory_path: str, app: str, days: int) -> None:
    """Write APP's key and certificate (and the CA's) into a folder to copy to the app's machine."""
    inv, ca = _load(inventory_path)
    if app not in app_names(inv):
        raise click.UsageError(f"no app {app!r} in {inventory_path}")
    directory = ca.issue_app(app, days)
    click.echo(f"{app}: {directory} (cert.pem, key.pem: keep it 0600, ca.pem); valid {days} days")
    click.echo(f"on the app's machine: ibgw tunnel --front HOST:PORT --cert {directory.name}/")


@pki.command()
@INVENTORY
@click.argument("app")
@_pki_errors
def revoke(inventory_path: str, app: str) -> None:
    """Revoke APP's certificate: the next `ibgw provision` installs the CRL and reloads the gates."""
    _, ca = _load(inventory_path)
    serial = ca.revoke(app)
    click.echo(f"revoked {app}'s certificate (serial {serial}); run `ibgw provision` to install the CRL")


@pki.command(name="list")
@INVENTORY
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_pki_errors
def list_(inventory_path: str, as_json: bool) -> None:
    """Every certificate: kind, name, serial, expiry, revoked; those expiring within 14 days flagged."""
    _, ca = _load(inventory_path)
    entries = ca.entries()
    soon = {e.path for e in expiring(entries)}
    rows = [
        {
            "kind": e.kind,
            "name": e.name,
            "serial": e.serial,
            "not_after": e.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "revoked": e.revoked,
            "expiring": e.path in soon,
        }
        for e in entries
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no app CA in {ca.dir}: run `ibgw pki init`")
    for r in rows:
        state = "REVOKED" if r["revoked"] else ("EXPIRES SOON" if r["expiring"] else "ok")
        click.echo(f"{r['kind']:<6} {r['name']:<24} {r['not_after']}  {state:<12} serial {r['serial']}")
