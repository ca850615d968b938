"""The typed shapes that cross the wire to and from agent.py: the facts it reads, the steps it runs.

agent.py runs alone on the host and cannot import this; these types are what the plan
builds and reads, and what the agent's functions of the same names take and return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NotRequired, TypedDict

# ---- facts -----------------------------------------------------------------


class FactsRequest(TypedDict):
    """What the agent reads, in one round trip: each resource adds what it needs (resources.py)."""

    op: Literal["facts"]
    supported: NotRequired[dict]  # platforms.supported(): the releases and their package names
    packages: list[str]
    user: str
    paths: list[str]  # stat'ed (and hashed), with the manifest's
    content_unless: dict[str, str]  # path -> sha256: read the content of a file that differs
    units: list[str]
    markers: list[str]  # small files read whole: stamps, owed unit actions
    firewall: bool  # is ibgw's table loaded
    manifest: str
    clients: NotRequired[list[int]]  # ports whose established connections are counted
    gates: NotRequired[dict[str, int]]  # mode -> its gate's metrics port: the apps connected
    pending: NotRequired[str]  # the directory of pending restart records


class PathFacts(TypedDict):
    kind: Literal["file", "dir", "link"]
    mode: int
    owner: str
    group: str
    sha256: str | None


class UnitFacts(TypedDict):
    enabled: str  # `systemctl is-enabled`: enabled, disabled, not-found, ...
    active: str  # `systemctl is-active`: active, inactive, failed, ...


class UserFacts(TypedDict):
    home: str
    shell: str
    uid: int
    groups: list[str]


class Manifest(TypedDict):
    """What ibgw created on a host (agent: MANIFEST): only these it may ever remove."""

    paths: list[str]  # files and directories, sorted
    units: list[str]  # units ibgw enabled (its own, and the front's)
    firewall: bool  # the nftables table inet ibgw
    installs: dict[str, list[list[str]]]  # per install ("ibc", "gateway-paper"): [tree, upload], oldest first


class PendingRecord(TypedDict):
    """A gateway's restart that waits (agent: in layout.pending_file): which units, why, whom it would cut."""

    units: list[str]
    reason: str
    apps: list[str]
    since: NotRequired[str]  # when it was first recorded (the agent's clock, UTC)


class PendingRestart(TypedDict):
    """A gateway's waiting restart as the recap, `provision --json` and `ibgw health` show it."""

    unit: str  # the gateway's main unit
    units: list[str]
    reason: str
    apps: list[str]
    since: str  # when first recorded on the host (this run's clock if this run records it)


class Facts(TypedDict):
    packages: dict[str, bool]
    user: UserFacts | None
    paths: dict[str, PathFacts | None]  # the desired paths, and the manifest's
    content: dict[str, str | None]  # the host's copy of each drifted file
    units: dict[str, UnitFacts]
    markers: dict[str, str | None]  # stamps: which wheels, which installer
    python: NotRequired[str]
    arch: NotRequired[str]
    glibc: NotRequired[str]
    firewall: NotRequired[bool | None]  # is the table loaded (asked only when the firewall is on)
    manifest: NotRequired[Manifest | None]  # None: none yet, or not root's own 0600 file
    clients: NotRequired[dict[str, int]]  # established connections to each gateway's API port
    gate_apps: NotRequired[dict[str, dict[str, dict[str, float]] | None]]  # per mode: its gate's apps
    pending: NotRequired[dict[str, PendingRecord]]  # per gateway unit: its restart that waits
    os: NotRequired[dict[str, str] | None]  # os-release's id, version_id, pretty_name
    unsupported: NotRequired[str | None]  # the OS's name, when the request's table does not list it
    memory_mb: NotRequired[int | None]  # MemTotal


# ---- steps -----------------------------------------------------------------


class Then(TypedDict):
    """Unit actions a step's change calls for (the agent notes them until the systemd step ran)."""

    restart: list[str]
    reload: NotRequired[list[str]]
    daemon_reload: NotRequired[bool]


class AptStep(TypedDict):
    kind: Literal["apt"]
    task: str
    packages: list[str]


class UserStep(TypedDict):
    kind: Literal["user"]
    task: str
    name: str
    home: str


class AttrsStep(TypedDict):
    """A directory (created if missing), or a file's owner and mode."""

    kind: Literal["dir", "attrs"]
    task: str
    path: str
    owner: str
    group: str
    mode: int


class FileStep(TypedDict):
    kind: Literal["file"]
    task: str
    path: str
    owner: str
    group: str
    mode: int
    content: str  # base64
    validate: list[str] | None
    then: Then


class IniStep(TypedDict):
    kind: Literal["ini"]
    task: str
    path: str
    owner: str
    group: str
    mode: int
    values: dict[str, dict[str, str]]
    seed: str  # base64: the whole file, if missing
    stop: list[str]
    then: Then


class VenvStep(TypedDict):
    kind: Literal["venv"]
    task: str
    path: str
    wheels: str
    requirement: str
    marker: str
    stamp: str
    then: NotRequired[Then]


class InstallStep(TypedDict):
    kind: Literal["install"]
    task: str
    upload: str
    sha256: str
    type: str
    dest: str
    base: str  # dest must be strictly inside it
    owner: str
    stamp: str
    then: NotRequired[Then]


class StopStep(TypedDict):
    """The stop phase: a unit the inventory no longer names is stopped and disabled."""

    kind: Literal["stop"]
    task: str
    unit: str


class NftDeleteStep(TypedDict):
    kind: Literal["nft_delete"]
    task: str
    table: str  # "inet ibgw"


class RemoveStep(TypedDict):
    """A file or a tree ibgw created and no longer wants; never followed through a symlink."""

    kind: Literal["remove"]
    task: str
    path: str
    tree: bool  # a directory with all below it; else a file, or a directory only once empty


class UserDelStep(TypedDict):
    kind: Literal["userdel"]
    task: str
    name: str


class ManifestStep(TypedDict):
    kind: Literal["manifest"]
    task: str
    path: str
    manifest: Manifest | None  # None: delete it (decommission --purge)


class SystemdStep(TypedDict):
    kind: Literal["systemd"]
    task: str
    daemon_reload: bool
    enable: list[str]
    start: list[str]
    restart: list[str]
    reload: list[str]
    clear: NotRequired[list[str]]  # pending restart records, done once the units restarted


class PendingStep(TypedDict):
    kind: Literal["pending"]
    task: str
    path: str
    record: PendingRecord


Step = (
    AptStep
    | UserStep
    | AttrsStep
    | FileStep
    | IniStep
    | VenvStep
    | InstallStep
    | StopStep
    | NftDeleteStep
    | RemoveStep
    | UserDelStep
    | ManifestStep
    | PendingStep
    | SystemdStep
)


@dataclass
class Task:
    """One line of the plan: ok or changed, with the agent step that converges it."""

    name: str
    changed: bool
    detail: str = ""
    diff: str = ""
    step: Step | None = None
    pending: PendingRestart | None = None  # a restart that waits: shown even when already recorded
