"""The desired state of a host: packages, the ibkr user, directories, files, units."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ..inventory.model import Host, Inventory
from ..inventory.secrets import Secrets
from . import layout, restarts
from .render import ManagedFile, render_host

FRONT_PACKAGES = {"haproxy": ["haproxy"], "nginx": ["nginx-light", "libnginx-mod-stream"]}
FRONT_UNIT = {"haproxy": "haproxy.service", "nginx": "nginx.service"}
# IB Gateway's bundled JRE draws its window on Xvfb through these; python3 waits for the display.
ARM64_MACHINES = ("aarch64", "arm64")
IBGW_PACKAGES = ["python3", "xvfb", "libxtst6", "libxrender1", "libxi6", "libxrandr2", "fontconfig", "unzip"]
# The operator's eyes on a display (ibgw screen, ibgw vnc): xwd (x11-apps) and x11vnc, run only on demand.
IBGW_PACKAGES += ["x11-apps", "x11vnc"]


@dataclass(frozen=True)
class Dir:
    path: str
    owner: str = "root"
    group: str = "root"
    mode: int = 0o755


@dataclass(frozen=True)
class Install:
    """An installer from the operator's artifact cache, unpacked or run into `dest`."""

    local: Path
    sha256: str
    kind: str  # "zip" (IBC) or "installer" (IB Gateway's install4j script)
    dest: str
    base: str  # dest must lie strictly inside it: the agent refuses anything else
    owner: str
    restart: tuple[str, ...]
    arm64: tuple[Path, str] | None = None  # (local, sha256) of the aarch64 installer, if it differs
    group: str = ""  # "ibc", "gateway-paper": its versions replace each other (the last two are kept)

    @property
    def upload(self) -> str:
        return f"{layout.UPLOADS}/{self.sha256[:16]}-{self.local.name}"

    def builds(self) -> list[tuple[Path, str]]:
        return [(self.local, self.sha256)] + ([self.arm64] if self.arm64 else [])

    def for_arch(self, machine: str) -> Install | None:
        """The installer for a host's `uname -m`; None when none is pinned for it."""
        if self.kind == "zip" or machine not in ARM64_MACHINES:
            return self
        return replace(self, local=self.arm64[0], sha256=self.arm64[1], arm64=None) if self.arm64 else None


@dataclass(frozen=True)
class Desired:
    packages: list[str]
    dirs: list[Dir]
    files: list[ManagedFile]
    units: list[str]  # enabled and active
    venv_units: list[str]  # run ibgw itself: restarted when it is reinstalled
    installs: list[Install]
    absent: list[str] = field(default_factory=list)  # paths that must not exist (if ibgw's to remove)
    gateways: list[restarts.GatewayUnits] = field(default_factory=list)  # whose restarts may wait


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
    ibkr = {"owner": layout.USER, "group": layout.GROUP}
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
