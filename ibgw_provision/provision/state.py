"""The desired state of a host: packages, the ibkr user, directories, files, units."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inventory.model import Host, Inventory
from ..inventory.secrets import Secrets
from . import layout, restarts
from .render import render_host
from .resources import Dir, File, Firewall, Install, Packages, Resource, Unit, Units, User, Venv

FRONT_PACKAGES = {"haproxy": ["haproxy"], "nginx": ["nginx-light", "libnginx-mod-stream"]}
FRONT_UNIT = {"haproxy": "haproxy.service", "nginx": "nginx.service"}
# IB Gateway's bundled JRE draws its window on Xvfb through these; python3 waits for the display.
IBGW_PACKAGES = ["python3", "xvfb", "libxtst6", "libxrender1", "libxi6", "libxrandr2", "fontconfig", "unzip"]
# The operator's eyes on a display (ibgw screen, ibgw vnc): xwd (x11-apps) and x11vnc, run only on demand.
IBGW_PACKAGES += ["x11-apps", "x11vnc"]


@dataclass(frozen=True)
class Desired:
    packages: list[str]
    dirs: list[Dir]
    files: list[File]
    units: list[str]  # enabled and active
    venv_units: list[str]  # run ibgw itself: restarted when it is reinstalled
    installs: list[Install]
    # What must not exist, if ibgw's to remove: File(path, present=False), Dir(..), Unit(name, present=False),
    # or a bare path.
    absent: list[str | File | Dir | Unit] = field(default_factory=list)
    gateways: list[restarts.GatewayUnits] = field(default_factory=list)  # whose restarts may wait

    def resources(self, venv: bool) -> list[Resource]:
        """Every resource the host must have, in plan order within each phase."""
        found: list[Resource] = [Packages(self.packages), User(), *self.dirs]
        found += [Venv(self.venv_units)] if venv else []
        found += [*self.installs, *self.files]
        found += [Firewall()] if layout.FIREWALL_UNIT in self.units else []
        return found + [Units(self.units, self.gateways)]

    def gone(self) -> list[File | Dir | Unit]:
        return [File(a, present=False) if isinstance(a, str) else a for a in self.absent]


def desired(inv: Inventory, name: str, secrets: Secrets, login_user: str | None = None) -> Desired:
    host = inv.hosts[name]
    venv_units = [layout.gateway_unit(g.mode) for g in host.gateways] if host.backend == "simulator" else []
    venv_units += [layout.gate_unit(g.mode) for g in host.gateways] if host.front.gate else []
    return Desired(
        _packages(host),
        _dirs(host),
        render_host(inv, name, secrets, login_user),
        units(host),
        venv_units,
        _installs(inv, host),
        gateways=restarts.gateways(host),
    )


def units(host: Host) -> list[str]:
    """Every unit the host runs, in start order: firewall, displays, gateways, gates, the front last."""
    found = [layout.FIREWALL_UNIT] if host.firewall.enabled else []
    found += [layout.xvfb_unit(g.mode) for g in host.gateways] if host.backend == "ibgw" else []
    found += [layout.gateway_unit(g.mode) for g in host.gateways]
    found += [layout.gate_unit(g.mode) for g in host.gateways] if host.front.gate else []
    return found + [FRONT_UNIT[host.front.kind]] + [layout.restart_timer(g.mode) for g in host.gateways]


def needs_venv(host: Host) -> bool:
    """ibgw itself runs on the host: as the simulator, or as the gate."""
    return host.backend == "simulator" or host.front.gate


def _installs(inv: Inventory, host: Host) -> list[Install]:
    if host.backend != "ibgw":
        return []
    (ibc, gateway), cache = inv.artifacts.pinned(), inv.path(inv.artifacts.cache_dir)
    units = tuple(layout.gateway_unit(g.mode) for g in host.gateways)
    installs = [
        Install(
            cache / ibc.file,
            ibc.sha256,
            "zip",
            layout.ibc_dir(ibc.version),
            f"{layout.OPT}/ibc",
            "root",
            units,
            group="ibc",
        )
    ]
    arm64 = (cache / gateway.arm64.file, gateway.arm64.sha256) if gateway.arm64 else None
    installs += [
        Install(
            cache / gateway.file,
            gateway.sha256,
            "installer",
            layout.ib_gateway_dir(g.mode, gateway.version),
            layout.tws_path(g.mode),
            layout.USER,
            (layout.gateway_unit(g.mode),),
            arm64,
            group=f"gateway-{g.mode}",
        )
        for g in host.gateways
    ]
    return installs


def _packages(host: Host) -> list[str]:
    packages = ["logrotate"] + FRONT_PACKAGES[host.front.kind]
    packages += ["nftables"] if host.firewall.enabled else []
    packages += IBGW_PACKAGES if host.backend == "ibgw" else []
    packages += ["python3-venv"] if needs_venv(host) else []
    return packages


def _dirs(host: Host) -> list[Dir]:
    ibkr: dict = {"owner": layout.USER, "group": layout.GROUP}
    dirs = [
        Dir(layout.OPT),
        Dir(layout.ETC, group=layout.GROUP, mode=0o750),
        Dir(layout.HOME, mode=0o750, **ibkr),
        Dir(layout.LOG, mode=0o755),
    ]
    for gw in host.gateways:
        dirs += [
            Dir(layout.settings_dir(gw.mode), mode=0o700, **ibkr),
            Dir(layout.log_dir(gw.mode), mode=0o750, group=layout.GROUP),
        ]
        if host.backend == "ibgw":
            dirs += [
                Dir(f"{layout.ETC}/{gw.mode}", mode=0o700, **ibkr),
                Dir(layout.tws_path(gw.mode), mode=0o755, **ibkr),
            ]
    if needs_venv(host):
        dirs.append(Dir(layout.WHEELS))
    if host.front.gate:
        dirs.append(Dir(layout.GATE_STATE, mode=0o700, **ibkr))
    if host.front.tls:
        dirs.append(Dir(layout.TLS_DIR, group=layout.GROUP, mode=0o750))
    if host.backend == "ibgw":
        dirs += [Dir(f"{layout.OPT}/ibc"), Dir(layout.UPLOADS, mode=0o700)]
    return dirs
