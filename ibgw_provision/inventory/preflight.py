"""Checks made on the operator machine before any host is touched."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import InputError, Problem
from .model import Artifact, Build, Inventory


def check_artifacts(inv: Inventory, names: list[str]) -> None:
    """Every installer a host needs is in the cache with its pinned sha256: checked before any change."""
    problems: list[Problem] = []
    seen: set[Path] = set()
    for key, artifact in _needed(inv, names):
        local = inv.path(inv.artifacts.cache_dir) / artifact.file
        if local in seen:
            continue
        seen.add(local)
        try:
            actual = file_sha256(local)
        except OSError as exc:
            problems.append(inv.problem(("artifacts", *key), f"cannot read {local}: {exc.strerror}"))
            continue
        if actual != artifact.sha256:
            problems.append(
                inv.problem(
                    ("artifacts", *key, "sha256"),
                    f"{local} has sha256 {actual}, not the pinned one: refusing to install it",
                )
            )
    if problems:
        raise InputError(problems)


def check_pki(inv: Inventory, names: list[str] | None = None) -> None:
    """front.tls: the pki directory has the CA, its CRL, each host's server certificate and key, and a
    certificate for every app; keys are 0600. Checked before provisioning and by validate --secrets."""
    problems: list[Problem] = []
    ca_key = inv.pki_dir() / "ca.key"
    for name in names or list(inv.hosts):
        host = inv.hosts[name]
        if not host.front.tls:
            continue
        where = ("hosts", name, "front", "tls")
        for path in [*inv.pki_files(name).values(), ca_key]:
            problem = _file_problem(path, secret=path.suffix == ".key" or path.name == "key.pem")
            if problem:
                problems.append(inv.problem(where, f"{problem}; run `ibgw pki init -i INVENTORY`"))
        for i, app in enumerate(host.apps):
            cert = inv.pki_dir() / "apps" / app.name / "cert.pem"
            if not cert.is_file():
                message = f"no certificate issued to app {app.name} ({cert}); run `ibgw pki issue {app.name}`"
                problems.append(inv.problem(("hosts", name, "apps", i, "name"), message))
    if problems:
        raise InputError(list(dict.fromkeys(problems)))


def _file_problem(path: Path, secret: bool) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if secret and mode & 0o077:
        return f"{path} is readable by others (chmod 600 it)"
    return None


def _needed(inv: Inventory, names: list[str]) -> list[tuple[tuple[str, ...], Artifact | Build]]:
    """(field, artifact) for each install the hosts get: IBC once per host, IB Gateway per gateway,
    every architecture's build that is pinned (the host's is known only once its facts are read)."""
    needed: list[tuple[tuple[str, ...], Artifact | Build]] = []
    for host in (inv.hosts[name] for name in names):
        if host.backend == "ibgw":
            ibc, gateway = inv.artifacts.pinned()
            builds: list[tuple[tuple[str, ...], Artifact | Build]] = [(("ib_gateway",), gateway)]
            builds += [(("ib_gateway", "arm64"), gateway.arm64)] if gateway.arm64 else []
            needed += [(("ibc",), ibc)] + builds * len(host.gateways)
    return needed


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
