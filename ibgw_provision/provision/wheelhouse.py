"""Wheels of ibgw and its dependencies for a host's Python, built on the operator side.

Gateway hosts often have no internet, so the simulator backend is installed
from wheels we ship. They are cached per (ibgw source, host Python, arch).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

PROJECT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "ibgw_provision", "templates")


class WheelhouseError(Exception):
    pass


@dataclass(frozen=True)
class Wheelhouse:
    dir: Path
    wheels: tuple[Path, ...]
    stamp: str  # changes when any wheel does
    requirement: str


def build(python: str, glibc: str, arch: str, cache: Path) -> Wheelhouse:
    """Build (or reuse) the wheels for a host running Python `python` with `glibc` on `arch`."""
    if not (PROJECT / "pyproject.toml").is_file():
        raise WheelhouseError(f"the simulator backend ships ibgw from its source tree; none at {PROJECT}")
    major_minor = "".join(python.split(".")[:2])
    out = cache / f"{source_digest()[:16]}-cp{major_minor}-glibc{glibc}-{arch}"
    if not (out / ".complete").exists():
        _fill(out, major_minor, _platforms(glibc, arch))
    wheels = tuple(sorted(out.glob("*.whl")))
    stamp = hashlib.sha256("".join(f"{w.name} {_sha256(w)}\n" for w in wheels).encode()).hexdigest()
    return Wheelhouse(out, wheels, stamp, f"ibgw-provision=={__version__}")


def source_digest() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        root = PROJECT / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(f"{path.relative_to(PROJECT)}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def _platforms(glibc: str, arch: str) -> list[str]:
    """Every manylinux tag a host with this glibc runs (pip does not widen --platform itself)."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    if major != 2:
        raise WheelhouseError(f"unsupported glibc {glibc} on the host")
    return [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)] + [f"manylinux2014_{arch}"]


def _fill(out: Path, major_minor: str, platforms: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".build-"))
    try:
        _pip("wheel", "--no-deps", "--wheel-dir", str(tmp), str(PROJECT))
        (own,) = tmp.glob("ibgw_provision-*.whl")
        tags = [arg for p in platforms for arg in ("--platform", p)]
        _pip(
            "download",
            "--dest",
            str(tmp),
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            major_minor,
            *tags,
            str(own),
        )
        (tmp / ".complete").touch()
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pip(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "-q", *args], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        raise WheelhouseError(f"pip {args[0]} failed: {proc.stderr.strip()[-600:]}")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
