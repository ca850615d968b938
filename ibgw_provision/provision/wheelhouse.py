"""Wheels of ibgw and its dependencies for a host's Python, gathered on the operator side.

Gateway hosts often have no internet, so ibgw (the simulator, the gate) is installed on them
from wheels we ship. Two parts:
- ibgw's own wheel, the same version the operator runs. From a source checkout it is built with
  pip. From an installed ibgw (`pip install`, `pipx install`) it is put back together from the
  installed files: a pure-Python wheel is those files plus its metadata, and each is checked
  against the sha256 that the distribution's RECORD holds, so a modified install is refused.
- its dependencies, exactly as pinned, with their sha256s, in data/host.lock
  (scripts/lock_host_deps.py), downloaded for the host's Python, glibc and architecture with
  --require-hashes. Nothing is resolved at provision time.
They are cached per (ibgw wheel, lock, host Python, glibc, arch).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import importlib.metadata
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .. import __version__

DIST = "ibgw-provision"
PROJECT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "ibgw_provision", "templates")
LOCK = Path(__file__).resolve().parents[1] / "data" / "host.lock"
NOT_SHIPPED = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}  # what pip adds to an install
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same files make the same wheel


class WheelhouseError(Exception):
    pass


@dataclass(frozen=True)
class Wheelhouse:
    dir: Path
    wheels: tuple[Path, ...]
    stamp: str  # changes when any wheel does
    requirement: str


def build(python: str, glibc: str, arch: str, cache: Path) -> Wheelhouse:
    """Gather (or reuse) the wheels for a host running Python `python` with `glibc` on `arch`."""
    own = own_wheel(cache / "ibgw")
    major_minor = "".join(python.split(".")[:2])
    key = hashlib.sha256(_sha256(own).encode() + LOCK.read_bytes()).hexdigest()[:16]
    out = cache / f"{key}-cp{major_minor}-glibc{glibc}-{arch}"
    if not (out / ".complete").exists():
        _fill(out, own, major_minor, platform_tags(glibc, arch))
    wheels = tuple(sorted(out.glob("*.whl")))
    stamp = hashlib.sha256("".join(f"{w.name} {_sha256(w)}\n" for w in wheels).encode()).hexdigest()
    return Wheelhouse(out, wheels, stamp, f"{DIST}=={__version__}")


def own_wheel(cache: Path) -> Path:
    """ibgw's wheel, of the version running here: from its source tree, or from its installed files."""
    if is_source_tree():
        return _built_from_source(cache)
    return wheel_from_record(cache)


def is_source_tree() -> bool:
    return (PROJECT / "pyproject.toml").is_file() and (PROJECT / "ibgw_provision" / "__init__.py").is_file()


def _built_from_source(cache: Path) -> Path:
    out = cache / f"source-{source_digest()[:16]}"
    found = sorted(out.glob("ibgw_provision-*.whl"))
    if found:
        return found[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".build-"))
    try:
        _pip("wheel", "--no-deps", "--wheel-dir", str(tmp), str(PROJECT))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return next(out.glob("ibgw_provision-*.whl"))


def source_digest() -> str:
    digest = hashlib.sha256()
    for name in SOURCES:
        root = PROJECT / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(f"{path.relative_to(PROJECT)}\0".encode() + path.read_bytes())
    return digest.hexdigest()


def wheel_from_record(cache: Path) -> Path:
    """The installed distribution's wheel, put back together from the files its RECORD lists."""
    try:
        dist = importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise WheelhouseError(
            f"{DIST} is neither a source tree at {PROJECT} nor an installed distribution"
        ) from None
    files = _record_files(dist)
    info = next(PurePosixPath(p).parts[0] for p, _ in files if p.endswith(".dist-info/WHEEL"))
    wheel_meta = dict(_headers(next(data for p, data in files if p == f"{info}/WHEEL")))
    if wheel_meta.get("Root-Is-Purelib", "").lower() != "true":
        raise WheelhouseError(f"{DIST} {dist.version} is not a pure-Python install; cannot ship it")
    tag = wheel_meta["Tag"]
    name = info.removesuffix(".dist-info")  # e.g. ibgw_provision-0.1.0
    out = cache / f"{name}-{tag}.whl"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    _write_wheel(tmp, files, f"{info}/RECORD")
    tmp.replace(out)
    return out


def _record_files(dist: importlib.metadata.Distribution) -> list[tuple[str, bytes]]:
    """(path, bytes) of every file the wheel had, each checked against its RECORD hash."""
    scripts = {ep.name for ep in dist.entry_points if ep.group in ("console_scripts", "gui_scripts")}
    found = []
    for path in dist.files or ():
        parts = path.parts
        if parts[0] == "..":  # outside site-packages: only the launchers pip writes from entry points
            if path.name not in scripts:
                raise WheelhouseError(f"{DIST}: {path} lies outside site-packages; cannot rebuild its wheel")
            continue
        if "__pycache__" in parts or (parts[0].endswith(".dist-info") and path.name in NOT_SHIPPED):
            continue
        data = Path(str(dist.locate_file(path))).read_bytes()
        if path.hash is None or path.hash.mode != "sha256" or _record_hash(data) != path.hash.value:
            raise WheelhouseError(
                f"installed {DIST} {dist.version} differs from its RECORD at {path}: "
                f"reinstall it (pip install --force-reinstall {DIST}=={dist.version})"
            )
        found.append((str(path), data))
    return sorted(found)


def _headers(data: bytes) -> list[tuple[str, str]]:
    lines = data.decode().splitlines()
    return [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines if ":" in line)]


def _write_wheel(path: Path, files: list[tuple[str, bytes]], record: str) -> None:
    """A wheel zip with these files and a RECORD, in a fixed order with fixed times."""
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    for name, data in files:
        writer.writerow([name, f"sha256={_record_hash(data)}", len(data)])
    writer.writerow([record, "", ""])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in [*files, (record, rows.getvalue().encode())]:
            entry = zipfile.ZipInfo(name, ZIP_TIME)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            wheel.writestr(entry, data)


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def platform_tags(glibc: str, arch: str) -> list[str]:
    """Every manylinux tag a host with this glibc runs (pip does not widen --platform itself)."""
    major, minor = (int(x) for x in glibc.split(".")[:2])
    if major != 2:
        raise WheelhouseError(f"unsupported glibc {glibc} on the host")
    return [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)] + [f"manylinux2014_{arch}"]


def _fill(out: Path, own: Path, major_minor: str, platforms: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".build-"))
    try:
        shutil.copy2(own, tmp / own.name)
        tags = [arg for p in platforms for arg in ("--platform", p)]
        _pip(
            "download",
            "--dest",
            str(tmp),
            "--require-hashes",
            "--no-deps",
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            major_minor,
            *tags,
            "-r",
            str(LOCK),
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
