"""Pin what ibgw ships to gateway hosts: ibgw_provision/data/host.lock, exact versions and sha256s.

Run it after changing [project].dependencies in pyproject.toml, or to take upgrades:

    .venv/bin/python scripts/lock_host_deps.py

For every supported release (its Python and glibc) and architecture, pip resolves the
dependencies to binary wheels straight from PyPI (--isolated: no local mirror or wheel
directory). The first target's versions constrain the others, so every host gets the same
versions; the lock lists each with the sha256 of every wheel some host may get. wheelhouse.py
downloads with --require-hashes against it: two operators ship the same bytes.

pip evaluates environment markers with the Python running this script, not the target's, so
each target's dependency closure is checked here with the target's markers: a package that only
an older Python needs, and that is missing from the lock, is an error rather than a host whose
offline install fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomllib
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ibgw_provision.provision import platforms, wheelhouse  # noqa: E402

LOCK = ROOT / "ibgw_provision" / "data" / "host.lock"


def targets() -> list[tuple[str, str, str]]:
    """(python, glibc, arch) of every host ibgw supports."""
    found = {(r.python, r.glibc, arch) for r in platforms.RELEASES.values() for arch in platforms.ARCHES}
    return sorted(found)


def resolve(requirements: list[str], target: tuple[str, str, str], pins: dict[str, str]) -> list[dict]:
    """pip's resolution for one target: the report's install items."""
    python, glibc, arch = target
    with tempfile.TemporaryDirectory() as tmp:
        reqs, report = Path(tmp, "host.in"), Path(tmp, "report.json")
        reqs.write_text("\n".join(requirements) + "\n")
        args = ["-r", str(reqs)]
        if pins:
            Path(tmp, "pins.txt").write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
            args += ["-c", str(Path(tmp, "pins.txt"))]
        tags = [a for p in wheelhouse.platform_tags(glibc, arch) for a in ("--platform", p)]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--isolated",
                "--disable-pip-version-check",
                "install",
                "-q",
                "--dry-run",
                "--ignore-installed",
                "--report",
                str(report),
                "--only-binary=:all:",
                "--implementation",
                "cp",
                "--python-version",
                python,
                *tags,
                "--target",
                str(Path(tmp, "target")),
                *args,
            ],
            check=True,
            timeout=900,
        )
        return json.loads(report.read_text())["install"]


def closure_check(requirements: list[str], items: list[dict], target: tuple[str, str, str]) -> None:
    """Every dependency the target's Python needs (its own markers) is in the resolution."""
    python, _, arch = target
    env = {
        **default_environment(),
        "python_version": python,
        "python_full_version": f"{python}.0",
        "platform_machine": arch,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    meta = {canonicalize_name(i["metadata"]["name"]): i["metadata"] for i in items}
    todo = [(Requirement(r), "ibgw-provision") for r in requirements]
    seen: set[str] = set()
    while todo:
        req, by = todo.pop()
        if req.marker and not req.marker.evaluate({**env, "extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name not in meta:
            raise SystemExit(f"{name} (needed by {by} on Python {python}, {arch}) is not in the resolution")
        if name not in seen:
            seen.add(name)
            todo += [(Requirement(d), name) for d in meta[name].get("requires_dist") or []]


def for_every_python(requirement: str) -> str:
    """A top-level requirement without its python_version marker: pip would judge that marker by
    the Python running this script, and an older host needs the package (it is harmless on others)."""
    req = Requirement(requirement)
    if req.marker and "python" in str(req.marker) and "version" in str(req.marker):
        req.marker = None
    return str(req)


def main() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirements = [for_every_python(r) for r in declared]
    first, *rest = targets()
    pins = {
        canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
        for i in resolve(requirements, first, {})
    }
    with ThreadPoolExecutor(4) as pool:
        results = dict(
            zip(
                [first, *rest],
                pool.map(lambda t: resolve(requirements, t, pins), [first, *rest]),
                strict=True,
            )
        )
    hashes: dict[str, set[str]] = {name: set() for name in pins}
    for target, items in results.items():
        closure_check(requirements, items, target)
        for item in items:
            name = canonicalize_name(item["metadata"]["name"])
            if pins.get(name) != item["metadata"]["version"]:
                raise SystemExit(
                    f"{name} resolves to {item['metadata']['version']} for {target}, "
                    f"{pins.get(name)} for {first}"
                )
            hashes[name].add(item["download_info"]["archive_info"]["hashes"]["sha256"])
    lines = [
        f"# Generated by `python scripts/lock_host_deps.py`: do not edit. What `ibgw provision`\n"
        f"# ships to gateway hosts. Targets (python, glibc, arch): "
        f"{', '.join('/'.join(t) for t in [first, *rest])}\n"
    ]
    for name in sorted(pins):
        lines.append(
            f"{name}=={pins[name]} \\\n"
            + " \\\n".join(f"    --hash=sha256:{h}" for h in sorted(hashes[name]))
            + "\n"
        )
    LOCK.parent.mkdir(exist_ok=True)
    LOCK.write_text("".join(lines))
    print(f"{LOCK.relative_to(ROOT)}: {len(pins)} packages, {sum(map(len, hashes.values()))} wheels")


if __name__ == "__main__":
    main()
