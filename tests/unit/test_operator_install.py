"""ibgw installed from its wheel (as `pip install` or `pipx install` leave it), outside any source tree,
ships the same version of itself, with the locked dependencies, to a host: no source checkout needed.

Slow-ish (a wheel build, a venv with ibgw's dependencies, one download of the host's wheels), every
step bounded by a subprocess timeout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from ibgw_provision import __version__
from ibgw_provision.provision import wheelhouse
from tests.conftest import ROOT

LOCK = ROOT / "ibgw_provision" / "data" / "host.lock"
HOST = (platform.python_version(), platform.libc_ver()[1], platform.machine())  # this machine as the host

GATHER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from ibgw_provision.provision import wheelhouse
    python, glibc, arch, cache = sys.argv[1:]
    try:
        first = wheelhouse.build(python, glibc, arch, Path(cache))
        again = wheelhouse.build(python, glibc, arch, Path(cache))
    except wheelhouse.WheelhouseError as exc:
        print(json.dumps({"error": str(exc)}))
        raise SystemExit(0)
    print(json.dumps({"module": wheelhouse.__file__, "source_tree": wheelhouse.is_source_tree(),
                      "wheels": [str(w) for w in first.wheels], "requirement": first.requirement,
                      "stamp": first.stamp, "again": again.stamp, "dir": str(first.dir)}))
""")


def run(argv: list, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def operator(tmp_path_factory) -> tuple[Path, Path]:
    """A fresh venv, outside the source tree, with ibgw installed from its built wheel."""
    root = tmp_path_factory.mktemp("operator")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", ROOT])
    (wheel,) = (root / "dist").glob("ibgw_provision-*.whl")
    run([sys.executable, "-m", "venv", root / "venv"], timeout=120)
    run([root / "venv/bin/pip", "install", "-q", wheel])
    return root, wheel


def gather(root: Path, host=HOST) -> dict:
    """The operator's ibgw prepares the host's wheelhouse, run from a directory with no source tree."""
    proc = run([root / "venv/bin/python", "-c", GATHER, *host, root / "cache"], cwd=root)
    return json.loads(proc.stdout)


def members(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as zf:
        return {n: hashlib.sha256(zf.read(n)).hexdigest() for n in zf.namelist() if not n.endswith("/RECORD")}


def locked() -> dict[str, set[str]]:
    """name -> the sha256s the lock allows."""
    found: dict[str, set[str]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==\S+", line):
            name = match.group(1)
            found[name] = set()
        elif match := re.search(r"--hash=sha256:([0-9a-f]{64})", line):
            found[name].add(match.group(1))
    return found


def canonical(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def test_the_installed_ibgw_ships_its_own_wheel_and_the_locked_dependencies(operator):
    root, built = operator
    got = gather(root)
    assert "error" not in got, got
    assert not got["source_tree"] and got["module"].startswith(str(root / "venv"))
    assert got["requirement"] == f"ibgw-provision=={__version__}"
    assert got["stamp"] == got["again"]  # the same install makes the same bytes: no needless reinstall
    wheels = [Path(w) for w in got["wheels"]]
    (own,) = [w for w in wheels if canonical(w) == "ibgw-provision"]
    assert own.name == built.name
    assert members(own) == members(built)  # every file, byte for byte, as in the wheel it was installed from
    lock = locked()
    deps = {canonical(w): w for w in wheels if w is not own}
    assert set(deps) == set(lock)
    for name, wheel in deps.items():
        assert hashlib.sha256(wheel.read_bytes()).hexdigest() in lock[name], wheel.name


def test_the_record_of_the_rebuilt_wheel_is_right(operator):
    root, _ = operator
    (own,) = [Path(w) for w in gather(root)["wheels"] if canonical(Path(w)) == "ibgw-provision"]
    with zipfile.ZipFile(own) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        rows = [line.split(",") for line in zf.read(record).decode().splitlines()]
        for name, digest, size in rows:
            if name == record:
                assert (digest, size) == ("", "")
                continue
            data = zf.read(name)
            assert (
                digest
                == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            )
            assert int(size) == len(data)
        assert sorted(n for n, *_ in rows) == sorted(zf.namelist())
        assert not [
            n for n in zf.namelist() if "__pycache__" in n or n.endswith(("INSTALLER", "direct_url.json"))
        ]


def test_the_host_installs_it_offline_from_what_was_shipped_alone(operator):
    """What the agent's venv step does on the host: pip with no index and no local configuration."""
    root, _ = operator
    got = gather(root)
    host = root / "host-venv"
    run([sys.executable, "-m", "venv", host], timeout=120)
    run(
        [
            host / "bin/pip",
            "install",
            "--isolated",
            "-q",
            "--no-index",
            "--find-links",
            got["dir"],
            got["requirement"],
        ]
    )
    assert run([host / "bin/ibgw", "--version"]).stdout.strip().endswith(__version__)
    assert run([host / "bin/ibgw", "sim", "--help"]).stdout.startswith("Usage")


def test_a_modified_install_is_refused(operator):
    root, _ = operator
    (target,) = (root / "venv/lib").glob("python3*/site-packages/ibgw_provision/provision/layout.py")
    original = target.read_bytes()
    try:
        target.write_bytes(original + b"\nUSER = 'root'\n")
        got = gather(root)
    finally:
        target.write_bytes(original)
    assert got["error"] == (
        f"installed ibgw-provision {__version__} differs from its RECORD at "
        "ibgw_provision/provision/layout.py: reinstall it (pip install --force-reinstall "
        f"ibgw-provision=={__version__})"
    )


def test_the_source_tree_is_used_when_ibgw_runs_from_it():
    assert wheelhouse.is_source_tree()


def test_the_lock_pins_every_dependency_exactly():
    lock = locked()
    assert lock and all(hashes for hashes in lock.values())
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert re.match(r"^[a-z0-9-]+==[^ ;]+ \\$", line), line  # exact, for every host, with hashes


def test_the_lock_covers_every_declared_dependency():
    """A dependency added to pyproject.toml needs `scripts/lock_host_deps.py` run again."""
    import tomllib
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = {canonicalize_name(Requirement(r).name) for r in declared} - set(locked())
    assert not missing, f"not in {LOCK.name}: {sorted(missing)}; run scripts/lock_host_deps.py"
