"""What ibgw created and the inventory no longer names: the host's manifest, diffed, and the removals.

The manifest (layout.MANIFEST, root's 0600) lists what ibgw created. A run removes what it lists
and the inventory no longer wants: units are stopped and disabled before any file step (their
ports are then free for a successor), files and trees are deleted after. Only manifest entries at
ibgw's own paths (layout.removable) are ever touched; logs, the gates' audit and the ibkr user's
home stay unless purged. Of each install (IBC, each gateway's IB Gateway), the current tree and
the one before it stay, with their uploads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from . import layout
from .resources import Dir, File, Firewall, Record, Resource, Unit
from .shapes import Facts, Manifest, ManifestStep
from .state import Desired
from .wheelhouse import Wheelhouse

KEEP_INSTALLS = 2  # the current version and the one before it
EMPTY = Manifest(paths=[], units=[], firewall=False, installs={})


@dataclass
class Removals:
    resources: list[Resource]  # absent: units and the firewall (the stop phase), paths; then the record
    paths: set[str]  # every path to remove (a removed tree takes what it holds)
    first: ManifestStep  # written before any step: the union of old and new


def wanted(want: Desired, wheels: Wheelhouse | None) -> Manifest:
    """The manifest of what `want` creates (arch-resolved installs)."""
    paths = [d.path for d in want.dirs] + [f.path for f in want.files] + [i.upload for i in want.installs]
    if wheels:
        paths += [layout.VENV] + [f"{layout.WHEELS}/{w.name}" for w in wheels.wheels]
    return Manifest(
        paths=sorted({p for p in paths if layout.removable(p)}),
        units=sorted(want.units),
        firewall=layout.FIREWALL_UNIT in want.units,
        installs={i.group: [[i.dest, i.upload]] for i in want.installs},
    )


def plan_removals(
    old: Manifest | None,
    new: Manifest,
    facts: Facts,
    absent: Sequence[File | Dir | Unit] = (),
    purge: bool = False,
) -> Removals:
    """absent: what must not exist (if ibgw's to remove) beside what the inventory dropped."""
    old = old or EMPTY
    # A unit ibgw may stop: one it recorded, or one of its own names (never another package's).
    units = {
        r.name
        for r in absent
        if isinstance(r, Unit) and (r.name in old["units"] or r.name.startswith("ibgw-"))
    }
    history = _history(old, new)
    kept_installs = {p for entries in history.values() for entry in entries for p in entry}
    dropped = {p for entries in old["installs"].values() for entry in entries for p in entry} - kept_installs
    wanted_paths = set(new["paths"]) | kept_installs
    stale = (set(old["paths"]) | dropped | {r.path for r in absent if not isinstance(r, Unit)}) - wanted_paths
    stale = {p for p in stale if layout.removable(p) and not _ancestor(p, wanted_paths)}
    kept = set() if purge else {p for p in stale if layout.kept(p)}
    trees = {entry[0] for entries in history.values() for entry in entries}  # kept install trees
    final = Manifest(
        paths=sorted(set(new["paths"]) | kept),
        units=new["units"],
        firewall=new["firewall"],
        installs=history,
    )
    paths = stale - kept - {p for p in stale if _under(p, trees)}
    stop: list[Resource] = [
        Unit(u, present=False) for u in sorted((set(old["units"]) - set(new["units"])) | units)
    ]
    stop += [Firewall(present=False)] if old["firewall"] and not new["firewall"] else []
    remove = [File(p, present=False) for p in sorted(paths, reverse=True)]  # deepest first
    record = Record(None if purge and not new["paths"] else final)
    return Removals(
        resources=stop + remove + [record],
        paths=paths,
        first=ManifestStep(
            kind="manifest", task="manifest (before)", path=layout.MANIFEST, manifest=_union(old, new)
        ),
    )


def _history(old: Manifest, new: Manifest) -> dict[str, list[list[str]]]:
    """Per install still wanted: its trees, oldest first, the last KEEP_INSTALLS of them."""
    history = {}
    for group, entries in new["installs"].items():
        current = entries[-1]
        before = [e for e in old["installs"].get(group, []) if e[0] != current[0]]
        history[group] = (before + [current])[-KEEP_INSTALLS:]
    return history


def _union(old: Manifest, new: Manifest) -> Manifest:
    installs = {g: list(v) for g, v in old["installs"].items()}
    for group, entries in new["installs"].items():
        installs[group] = [e for e in installs.get(group, []) if e not in entries] + entries
    return Manifest(
        paths=sorted(set(old["paths"]) | set(new["paths"])),
        units=sorted(set(old["units"]) | set(new["units"])),
        firewall=old["firewall"] or new["firewall"],
        installs=installs,
    )


def _ancestor(path: str, paths: set[str]) -> bool:
    """A directory that holds something still wanted stays."""
    return any(p.startswith(path + "/") for p in paths)


def _under(path: str, trees: set[str]) -> bool:
    return any(path.startswith(t + "/") for t in trees)
