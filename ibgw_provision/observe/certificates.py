"""front.tls for `ibgw health`: certificates about to expire, and the probe's own certificate."""

from __future__ import annotations

import datetime
import ssl

from ..inventory.model import PROBE_APP, Inventory
from ..pki.ca import Pki, expiring, not_after

WARN_DAYS = 14


def findings(inv: Inventory, name: str, server_pem: str | None) -> list[tuple[str, str, str]]:
    """(severity, subject, message) for each certificate of this host or its apps that expires within
    14 days: the front's certificate as installed on the host, and the apps' in the pki directory."""
    host = inv.hosts[name]
    if not host.front.tls:
        return []
    found = []
    now = datetime.datetime.now(datetime.timezone.utc)
    if server_pem:
        end = not_after(server_pem.encode())
        if end <= now + datetime.timedelta(days=WARN_DAYS):
            found.append(
                ("degraded", f"{name} front", _expiry("the front's certificate on the host", end, now))
            )
    apps = {app.name for app in host.apps} | {PROBE_APP}
    for entry in expiring(Pki(inv.pki_dir()).entries(), WARN_DAYS, now):
        if entry.kind == "ca" or (entry.kind == "app" and entry.name in apps):
            found.append(
                ("degraded", f"{entry.kind} {entry.name}", _expiry(str(entry.path), entry.not_after, now))
            )
    return found


def _expiry(what: str, end: datetime.datetime, now: datetime.datetime) -> str:
    when = end.strftime("%Y-%m-%d %H:%M UTC")
    return f"{what} expired on {when}" if end <= now else f"{what} expires on {when}: renew it"


def probe_context(inv: Inventory) -> ssl.SSLContext | str:
    """TLS for the front probe, with the probe's certificate (`ibgw pki init` issues it); or why not."""
    ca = Pki(inv.pki_dir())
    directory = ca.app_dir(PROBE_APP)
    try:
        context = ssl.create_default_context(cafile=ca.ca_cert)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    except (OSError, ssl.SSLError) as exc:
        return f"no certificate for the front probe in {directory} ({exc}); run `ibgw pki init`"
    return context
