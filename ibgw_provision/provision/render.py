"""Render every file a host gets from the Jinja2 templates in templates/.

Output is the desired state: paths, contents, owners, modes, and which units
must reload or restart when a file changes. Nothing here touches a host.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import jinja2

from ..errors import InputError
from ..inventory.model import IBC_KEYS, Gateway, Host, Inventory
from ..inventory.secrets import Secrets
from . import layout
from .resources import File as ManagedFile

BYPASS = [key for key in IBC_KEYS if key.startswith("Bypass")]  # IBC's API precautions


# jts.ini keys ibgw owns: who may connect, API-only mode, the time zone (also the JVM's TZ).
JTS_OWNED = {"IBGateway": ("TrustedIPs", "ApiOnly"), "Logon": ("TimeZone",)}


@dataclass(frozen=True)
class GatewayView:
    """A gateway with what the host derives for it (display, install tree)."""

    gw: Gateway
    display: int
    tws_path: str
    tws_version: str

    def __getattr__(self, name: str):
        return getattr(self.gw, name)


def templates_dir() -> Path:
    package = Path(__file__).resolve().parents[1]
    packaged = package / "templates"  # in a built wheel
    return packaged if packaged.is_dir() else package.parent / "templates"


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(templates_dir()),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    autoescape=False,
)


def render_host(
    inv: Inventory, name: str, secrets: Secrets, login_user: str | None = None
) -> list[ManagedFile]:
    """Every file the host gets. login_user: who this run logged in as (from the command line,
    the inventory or ssh_config); without a connection (`ibgw render`), the inventory's ssh.user."""
    host = inv.hosts[name]
    ctx = _context(inv, name, host) | {"login_user": login_user or host.ssh.user}
    files = (
        _front(host, ctx)
        + _logrotate(ctx)
        + _firewall(host, ctx)
        + _tls(inv, name, host, secrets)
        + _maintenance(host, ctx)
    )
    for view in ctx["gateways"]:
        files += _gateway(host, view, {**ctx, "gw": view}, secrets)
    return files


def _render(template: str, ctx: dict) -> str:
    return _ENV.get_template(template).render(ctx)


def _context(inv: Inventory, name: str, host: Host) -> dict:
    gw_art, ibc_art = inv.artifacts.ib_gateway, inv.artifacts.ibc
    tws_version = layout.tws_version(gw_art.version) if gw_art else ""
    views = [
        GatewayView(gw, layout.FIRST_DISPLAY + i, layout.tws_path(gw.mode), tws_version)
        for i, gw in enumerate(host.gateways)
    ]
    apps = {gw.mode: host.apps_for(gw.mode) for gw in host.gateways}
    return {
        "name": name,
        "host": host,
        "layout": layout,
        "front": host.front,
        "gateways": views,
        "apps": apps,
        "allow": {mode: front_allow(host, mode_apps) for mode, mode_apps in apps.items()},
        "probe_cidrs": probe_cidrs(host),
        "front_listen": f"[{host.front.bind}]" if ":" in host.front.bind else host.front.bind,
        "front_group": layout.FRONT_GROUP[host.front.kind],
        "api_ports": [gw.api_port for gw in host.gateways],
        "stream_timeout": max(host.front.timeouts.client, host.front.timeouts.server, key=_seconds),
        "firewall_rules": firewall_rules(host, apps),
        "gate_apps": {mode: _gate_apps(host, mode_apps) for mode, mode_apps in apps.items()},
        "ib_gateway": gw_art,
        "display_wait_s": layout.DISPLAY_WAIT_S,
        "ibc": {"version": ibc_art.version, "dir": layout.ibc_dir(ibc_art.version)} if ibc_art else None,
    }


def _gate_apps(host: Host, apps: list) -> list[dict]:
    """The gate's registry for one mode: its apps, and health's front probe (which may only ask the time)."""
    entries = [_gate_app(a) for a in apps]
    probe = {
        "name": "ibgw-health",
        "client_id": host.health.probe_client_id + 1,
        "read_only": True,
        "probe_only": True,
        "sources": host.firewall.admin_cidrs + ["127.0.0.0/8"],
        "max_order_quantity": None,
        "allowed_sec_types": None,
    }
    return entries + [probe]


GATE_APP_FIELDS = {"name", "client_id", "sources", "read_only", "max_order_quantity", "allowed_sec_types"}
GATE_APP_OPTIONAL = {  # rendered only when set, so gate configs without them stay as they were
    "max_cash_quantity",
    "max_notional_per_order",
    "max_orders_per_minute",
    "max_open_orders",
    "allow_settings",
    "allow_global_cancel",
}


def _gate_app(app) -> dict:
    entry = app.model_dump(include=GATE_APP_FIELDS)
    optional = app.model_dump(include=GATE_APP_OPTIONAL, exclude_defaults=True)
    return entry | {key: optional[key] for key in sorted(optional)}


def probe_cidrs(host: Host) -> list[str]:
    """Admin CIDRs the front admits for health's probe alone: only with a gate, which lets them in
    with the probe's client id only, read-only (the front alone cannot tell client ids apart)."""
    return list(host.firewall.admin_cidrs) if host.front.gate else []


def front_allow(host: Host, apps: list) -> list[str]:
    """Who may reach a front port: its apps' CIDRs, and the admin CIDRs for health's probe."""
    return _union([*(a.sources for a in apps), probe_cidrs(host)])


def _union(source_lists) -> list[str]:
    return sorted({cidr for sources in source_lists for cidr in sources})


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if match is None:  # the inventory's Duration type admits only these
        raise ValueError(f"not a duration: {duration!r}")
    value, unit = match.groups()
    return int(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def firewall_rules(host: Host, apps: dict) -> list[dict]:
    """nftables allow rules: SSH from admin CIDRs, each front port from its apps' CIDRs."""
    wanted = [("admin", host.ssh.port, host.firewall.admin_cidrs, "SSH from the admin CIDRs")]
    wanted += [
        (
            f"{gw.mode}_apps",
            gw.front_port,
            front_allow(host, apps[gw.mode]),
            f"the {gw.mode} front from its apps"
            + (" and, for health's probe only, the admin CIDRs" if probe_cidrs(host) else ""),
        )
        for gw in host.gateways
    ]
    rules = []
    for set_name, port, cidrs, why in wanted:
        for family, suffix in (("ipv4", "v4"), ("ipv6", "v6")):
            # nft refuses overlapping intervals in a set (an app's /32 inside another's /28): collapse
            nets = [ipaddress.ip_network(c) for c in cidrs if (":" in c) == (family == "ipv6")]
            members = [str(n) for n in ipaddress.collapse_addresses(nets)]  # type: ignore[type-var]
            if members:
                rules.append(
                    {
                        "set": f"{set_name}_{suffix}",
                        "family": family,
                        "port": port,
                        "cidrs": members,
                        "why": why,
                    }
                )
    return rules


def _front(host: Host, ctx: dict) -> list[ManagedFile]:
    if host.front.kind == "haproxy":
        return [
            ManagedFile(
                "/etc/haproxy/haproxy.cfg",
                _render("haproxy/haproxy.cfg.j2", ctx),
                reload=("haproxy.service",),
            )
        ]
    return [
        ManagedFile("/etc/nginx/nginx.conf", _render("nginx/nginx.conf.j2", ctx), reload=("nginx.service",))
    ]


def _maintenance(host: Host, ctx: dict) -> list[ManagedFile]:
    """A oneshot that applies a gateway's pending restart, and per gateway the timer of its window."""
    units = [layout.xvfb_unit("%i")] if host.backend == "ibgw" else []
    units += [layout.gateway_unit("%i")] + ([layout.gate_unit("%i")] if host.front.gate else [])
    service = _render("systemd/ibgw-restart@.service.j2", {**ctx, "units": units})
    files = [ManagedFile(f"{layout.UNIT_DIR}/{layout.RESTART_UNIT}", service)]
    for gw in host.gateways:
        timer = layout.restart_timer(gw.mode)
        at = f"*-*-* {gw.maintenance()}:00 {gw.ibc.time_zone}"
        text = _render("systemd/ibgw-restart.timer.j2", {**ctx, "mode": gw.mode, "on_calendar": at})
        files.append(ManagedFile(f"{layout.UNIT_DIR}/{timer}", text, restart=(timer,)))
    return files


def _logrotate(ctx: dict) -> list[ManagedFile]:
    return [ManagedFile("/etc/logrotate.d/ibgw", _render("logrotate/ibgw.j2", ctx))]


def _firewall(host: Host, ctx: dict) -> list[ManagedFile]:
    if not host.firewall.enabled:
        return []
    unit = layout.FIREWALL_UNIT
    return [
        ManagedFile(
            f"{layout.ETC}/firewall.nft", _render("nftables/ibgw.nft.j2", ctx), mode=0o600, reload=(unit,)
        ),
        ManagedFile(
            f"{layout.UNIT_DIR}/{unit}", _render("systemd/ibgw-firewall.service.j2", ctx), restart=(unit,)
        ),
    ]


def _gateway(host: Host, view: GatewayView, ctx: dict, secrets: Secrets) -> list[ManagedFile]:
    mode, unit = view.mode, layout.gateway_unit(view.mode)
    files = _gate(view, ctx) if host.front.gate else []
    if host.backend == "simulator":
        return files + [
            ManagedFile(
                f"{layout.UNIT_DIR}/{unit}", _render("systemd/ibgw-sim.service.j2", ctx), restart=(unit,)
            )
        ]
    xvfb = layout.xvfb_unit(mode)
    login = {"username": secrets.value(view.login.username), "password": secrets.value(view.login.password)}
    return files + [
        ManagedFile(
            f"{layout.UNIT_DIR}/{xvfb}", _render("systemd/ibgw-xvfb.service.j2", ctx), restart=(xvfb, unit)
        ),
        ManagedFile(
            f"{layout.UNIT_DIR}/{unit}", _render("systemd/ibgw-gateway.service.j2", ctx), restart=(unit,)
        ),
        ManagedFile(
            layout.ibc_ini(mode),
            _render("ibc/config.ini.j2", {**ctx, "login": login, "bypass_keys": BYPASS}),
            mode=0o600,
            secret=True,
            restart=(unit,),
            owner=layout.USER,
            group=layout.GROUP,
        ),
        ManagedFile(
            f"{layout.settings_dir(mode)}/jts.ini",
            _render("ibc/jts.ini.j2", ctx),
            mode=0o600,
            owned=JTS_OWNED,
            restart=(unit,),
            owner=layout.USER,
            group=layout.GROUP,
        ),
        ManagedFile(
            f"{view.tws_path}/ibgateway/{view.tws_version}/ibgateway.vmoptions",
            _render("ibc/ibgateway.vmoptions.j2", ctx),
            restart=(unit,),
            owner=layout.USER,
            group=layout.GROUP,
        ),
    ]


def _tls(inv: Inventory, name: str, host: Host, secrets: Secrets) -> list[ManagedFile]:
    """front.tls: the pki directory's CA, CRL and this front's certificate and key, for the gates.

    A change reloads the gates (SIGHUP): new connections use the new files, none is dropped."""
    if not host.front.tls:
        return []
    gates = tuple(layout.gate_unit(g.mode) for g in host.gateways)
    files = []
    for kind, local in inv.pki_files(name).items():
        key = kind == "key"
        if secrets.masked:  # render and --check: where it comes from, not what it holds
            relative = local.relative_to(inv.pki_dir())
            content = f"# {kind}: {relative} in the operator's pki directory (`ibgw pki`)\n"
        else:
            content = _pki_file(inv, name, local, key)
            if key:
                secrets.values.add(content.strip())
        files.append(
            ManagedFile(
                layout.TLS_FILES[kind],
                content,
                mode=0o640 if key else 0o644,
                group=layout.GROUP if key else "root",
                secret=key,
                reload=gates,
            )
        )
    return files


def _pki_file(inv: Inventory, name: str, path: Path, key: bool) -> str:
    """A file of the pki directory, or bad input naming the host's front.tls."""
    where = ("hosts", name, "front", "tls")
    try:
        if key and path.stat().st_mode & 0o077:
            raise InputError([inv.problem(where, f"{path} is readable by others; chmod 600 it")])
        return path.read_text(encoding="ascii")
    except OSError as exc:
        message = f"cannot read {path}: {exc.strerror}; run `ibgw pki init -i INVENTORY` first"
        raise InputError([inv.problem(where, message)]) from None


def _gate(view: GatewayView, ctx: dict) -> list[ManagedFile]:
    unit = layout.gate_unit(view.mode)
    return [
        ManagedFile(
            layout.gate_config(view.mode),
            _render("gate/gate.yml.j2", ctx),
            mode=0o640,
            group=layout.GROUP,
            restart=(unit,),
        ),
        ManagedFile(
            f"{layout.UNIT_DIR}/{unit}", _render("systemd/ibgw-gate.service.j2", ctx), restart=(unit,)
        ),
    ]
