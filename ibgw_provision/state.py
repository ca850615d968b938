"""The desired state of a host: packages, the ibkr user, directories, files, units."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from . import layout
from .errors import InputError
from .inventory import Host, Inventory
from .render import ManagedFile, render_host
from .secrets import Secrets

FRONT_PACKAGES = {"haproxy": ["haproxy"], "nginx": ["nginx-light", "libnginx-mod-stream"]}
FRONT_UNIT = {"haproxy": "haproxy.service", "nginx": "nginx.service"}
# IB Gateway's bundled JRE draws its window on Xvfb through these.
IBGW_PACKAGES = ["xvfb", "libxtst6", "libxrender1", "libxi6", "libxrandr2", "fontconfig", "unzip"]


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

    @property
    def upload(self) -> str:
        return f"{layout.UPLOADS}/{self.sha256[:16]}-{self.local.name}"


@dataclass(frozen=True)
class Desired:
    packages: list[str]
    dirs: list[Dir]
    files: list[ManagedFile]
    units: list[str]  # enabled and active
    venv_units: list[str]  # run ibgw itself: restarted when it is reinstalled
    installs: list[Install]


def desired(inv: Inventory, name: str, secrets: Secrets) -> Desired:
    host = inv.hosts[name]
    venv_units = [layout.gateway_unit(g.mode) for g in host.gateways] if host.backend == "simulator" else []
    venv_units += [layout.gate_unit(g.mode) for g in host.gateways] if host.front.gate else []
    return Desired(_packages(host), _dirs(host), render_host(inv, name, secrets), units(host), venv_units,
                   _installs(inv, host))


def units(host: Host) -> list[str]:
    """Every unit the host runs, in start order: firewall, displays, gateways, gates, the front last."""
    found = [layout.FIREWALL_UNIT] if host.firewall.enabled else []
    found += [layout.xvfb_unit(g.mode) for g in host.gateways] if host.backend == "ibgw" else []
    found += [layout.gateway_unit(g.mode) for g in host.gateways]
    found += [layout.gate_unit(g.mode) for g in host.gateways] if host.front.gate else []
    return found + [FRONT_UNIT[host.front.kind]]


def needs_venv(host: Host) -> bool:
    """ibgw itself runs on the host: as the simulator, or as the gate."""
    return host.backend == "simulator" or host.front.gate


def _installs(inv: Inventory, host: Host) -> list[Install]:
    if host.backend != "ibgw":
        return []
    ibc, gateway, cache = inv.artifacts.ibc, inv.artifacts.ib_gateway, inv.path(inv.artifacts.cache_dir)
    units = tuple(layout.gateway_unit(g.mode) for g in host.gateways)
    installs = [Install(cache / ibc.file, ibc.sha256, "zip", layout.ibc_dir(ibc.version), f"{layout.OPT}/ibc",
                        "root", units)]
    installs += [Install(cache / gateway.file, gateway.sha256, "installer",
                         layout.ib_gateway_dir(g.mode, gateway.version), layout.tws_path(g.mode), layout.USER,
                         (layout.gateway_unit(g.mode),))
                 for g in host.gateways]
    return installs


def check_artifacts(inv: Inventory, names: list[str]) -> None:
    """Every installer a host needs is in the cache with its pinned sha256: checked before any change."""
    problems, seen = [], set()
    for install in (i for name in names for i in _installs(inv, inv.hosts[name])):
        if install.local in seen:
            continue
        seen.add(install.local)
        field = ("artifacts", "ibc" if install.kind == "zip" else "ib_gateway", "sha256")
        try:
            actual = file_sha256(install.local)
        except OSError as exc:
            problems.append(inv.problem(field[:2], f"cannot read {install.local}: {exc.strerror}"))
            continue
        if actual != install.sha256:
            problems.append(inv.problem(field, f"{install.local} has sha256 {actual}, not the pinned one: "
                                               "refusing to install it"))
    if problems:
        raise InputError(problems)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _packages(host: Host) -> list[str]:
    packages = ["logrotate"] + FRONT_PACKAGES[host.front.kind]
    packages += ["nftables"] if host.firewall.enabled else []
    packages += IBGW_PACKAGES if host.backend == "ibgw" else []
    packages += ["python3-venv"] if needs_venv(host) else []
    return packages


def _dirs(host: Host) -> list[Dir]:
    ibkr = {"owner": layout.USER, "group": layout.GROUP}
    dirs = [Dir(layout.OPT), Dir(layout.ETC, group=layout.GROUP, mode=0o750),
            Dir(layout.HOME, mode=0o750, **ibkr), Dir(layout.LOG, mode=0o755)]
    for gw in host.gateways:
        dirs += [Dir(layout.settings_dir(gw.mode), mode=0o700, **ibkr),
                 Dir(layout.log_dir(gw.mode), mode=0o750, group=layout.GROUP)]
        if host.backend == "ibgw":
            dirs += [Dir(f"{layout.ETC}/{gw.mode}", mode=0o700, **ibkr),
                     Dir(layout.tws_path(gw.mode), mode=0o755, **ibkr)]
    if needs_venv(host):
        dirs.append(Dir(layout.WHEELS))
    if host.front.gate:
        dirs.append(Dir(layout.GATE_STATE, mode=0o700, **ibkr))
    if host.backend == "ibgw":
        dirs += [Dir(f"{layout.OPT}/ibc"), Dir(layout.UPLOADS, mode=0o700)]
    return dirs
