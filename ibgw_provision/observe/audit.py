"""`ibgw audit HOST`: the gates' audit logs, read from the operator machine over SSH.

It runs the host's own `ibgw audit --config /etc/ibgw/gate-MODE.yml --json` (the venv the gate
runs from), as root (the log is the ibkr user's, 0700), one SSH command per mode, and merges
the answers with each row's mode.
"""

from __future__ import annotations

import json
import shlex
from datetime import datetime

from ..inventory.model import Host, Inventory
from ..provision import layout
from ..provision.remote import as_root, target
from ..provision.transport import Transport

TABLES = ("connections", "orders")


class AuditError(Exception):
    """A one-line reason an audit log could not be read."""


def command(mode: str, app: str | None, since: datetime | None) -> str:
    """The on-host command for one mode's log; `since` is sent as an absolute UTC time."""
    argv = [f"{layout.VENV}/bin/ibgw", "audit", "--config", layout.gate_config(mode), "--json"]
    argv += ["--app", app] if app else []
    argv += ["--since", since.astimezone().isoformat()] if since else []
    return shlex.join(argv)


def read(
    inv: Inventory, name: str, modes: list[str], app: str | None, since: datetime | None, timeout: float
) -> dict[str, list[dict]]:
    """Rows of every mode in `modes`, each with its "mode", oldest first per table."""
    merged: dict[str, list[dict]] = {t: [] for t in TABLES}
    with Transport(target(inv, name, accept_new=False), connect_timeout=timeout) as transport:
        for mode in modes:
            line, stdin = as_root(transport, command(mode, app, since))  # sudo as any other user
            proc = transport.run(line, stdin, timeout=timeout)
            if proc.rc != 0:
                why = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.rc}"]
                raise AuditError(f"{name}: the {mode} gate's audit: {why[0]}")
            try:
                rows = json.loads(proc.stdout)
            except ValueError:
                raise AuditError(
                    f"{name}: the {mode} gate's audit: not JSON: {proc.stdout[:200]!r}"
                ) from None
            for table in TABLES:
                merged[table] += [{"mode": mode, **row} for row in rows[table]]
    merged["connections"].sort(key=lambda row: row["started"])
    merged["orders"].sort(key=lambda row: row["at"])
    return merged


def modes(host: Host, mode: str | None) -> list[str]:
    """The modes to read: `mode`, or every gateway's."""
    return [mode] if mode else [g.mode for g in host.gateways]
