"""The host operating systems ibgw supports, and the package names that differ on each.

The agent reads /etc/os-release on the host and reports (ID, VERSION_ID); anything not in
RELEASES is refused by name before any package is queried or installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Packages are named as on Debian 12; RENAMES gives another release's name where it differs.
# Debian 13: nginx-light is a transitional flavour there (nginx plus the http echo module), and
# nginx itself is the server. Ubuntu: nginx pulls the server in on both releases (checked against
# Ubuntu's archive by name only: Ubuntu is not exercised by our tests).


@dataclass(frozen=True)
class Release:
    name: str
    python: str  # the release's python3, which the host venv is built for
    glibc: str  # its C library: which manylinux wheels it runs (the host lock covers each)
    renames: dict[str, str] = field(default_factory=dict)


RELEASES: dict[tuple[str, str], Release] = {
    ("debian", "12"): Release("Debian 12 (bookworm)", "3.11", "2.36"),
    ("debian", "13"): Release("Debian 13 (trixie)", "3.13", "2.41", {"nginx-light": "nginx"}),
    ("ubuntu", "22.04"): Release("Ubuntu 22.04 (jammy)", "3.10", "2.35", {"nginx-light": "nginx"}),
    ("ubuntu", "24.04"): Release("Ubuntu 24.04 (noble)", "3.12", "2.39", {"nginx-light": "nginx"}),
}
SUPPORTED = "Debian 12, 13 and Ubuntu 22.04, 24.04"
ARCHES = ("x86_64", "aarch64")


class UnsupportedOS(Exception):
    """A host whose OS ibgw does not provision: one line naming it."""


def supported() -> dict[str, list[str]]:
    """What the agent accepts, sent in the facts request: {ID: [VERSION_ID, ...]}."""
    table: dict[str, list[str]] = {}
    for os_id, version in RELEASES:
        table.setdefault(os_id, []).append(version)
    return table


def release(facts: Mapping[str, Any]) -> Release:
    """The host's release from its facts, or UnsupportedOS naming what it runs."""
    found = facts.get("os") or {}
    key = (found.get("id", ""), found.get("version_id", ""))
    if facts.get("unsupported") or key not in RELEASES:
        what = facts.get("unsupported") or found.get("pretty_name") or "unknown (no /etc/os-release)"
        raise UnsupportedOS(f"unsupported OS: {what} (ibgw supports {SUPPORTED})")
    return RELEASES[key]


def package_names(names: list[str], rel: Release) -> list[str]:
    """Debian 12 names as `rel` calls them, in order, without duplicates."""
    return list(dict.fromkeys(rel.renames.get(n, n) for n in names))


def every_name(names: list[str]) -> list[str]:
    """Every name these packages have on any release: what the facts query asks dpkg about."""
    return list(dict.fromkeys(n for rel in RELEASES.values() for n in package_names(names, rel)))
