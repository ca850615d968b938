"""Compare the desired state with a host's facts, read once, and list what must change.

The plan is pure: facts in, tasks out. Each kind of resource plans itself (resources.py); the plan
asks each what to read, then runs them phase by phase. Each changed task carries the agent step
that converges it; services restart only when their own inputs changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..inventory.secrets import Secrets
from . import absence, layout, platforms, restarts
from .resources import (  # noqa: F401 (VALIDATORS, owned_values, sha256, _secret_file_lines: the file kind's)
    VALIDATORS,
    Context,
    Resource,
    User,
    _secret_file_lines,
    owned_values,
    sha256,
)
from .shapes import Facts, FactsRequest, Step, SystemdStep, Task
from .state import Desired
from .wheelhouse import Wheelhouse


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    uploads: list[tuple] = field(default_factory=list)  # (local Path, remote path)
    first: list[Step] = field(default_factory=list)  # before every step: the manifest, old and new

    @property
    def changed(self) -> list[Task]:
        return [t for t in self.tasks if t.changed]

    def steps(self) -> list[Step]:
        return [t.step for t in self.tasks if t.changed and t.step]

    def request(self) -> dict:
        """The apply request: the steps, and where the agent keeps unit actions still owed."""
        return {"op": "apply", "steps": self.first + self.steps(), "pending": layout.PENDING}


def _request(resources: list[Resource]) -> FactsRequest:
    """What to read from the host, in one round trip: each resource adds what it needs."""
    req = FactsRequest(
        op="facts",
        packages=[],
        user=layout.USER,
        paths=[],
        content_unless={},
        units=[],
        markers=[],
        firewall=False,
        manifest=layout.MANIFEST,
    )
    for resource in resources:
        resource.request(req)
    return req


def facts_request(want: Desired, wheels: bool) -> FactsRequest:
    req = _request([*want.resources(wheels), *want.gone()])
    req["supported"] = platforms.supported()
    return req


def plan(
    want: Desired,
    facts: Facts,
    secrets: Secrets,
    wheelhouse: Wheelhouse | None = None,
    policy: restarts.Policy | None = None,
    release: platforms.Release | None = None,
) -> Plan:
    """release: the host's OS, which names its packages (Debian 12's names when None)."""
    ctx = Context(facts, secrets, policy or restarts.Policy(), wheelhouse, release)
    want = _for_arch(want, facts.get("arch", "x86_64"))
    gone = absence.plan_removals(facts.get("manifest"), absence.wanted(want, wheelhouse), facts, want.gone())
    ctx.gone = gone.paths
    result = Plan(tasks=_run(want.resources(wheelhouse is not None) + gone.resources, ctx))
    result.uploads, result.first = ctx.uploads, [gone.first] if result.changed else []
    return result


def _run(resources: list[Resource], ctx: Context) -> list[Task]:
    """Each resource's tasks, phase by phase (in their given order within a phase)."""
    return [task for resource in sorted(resources, key=lambda r: r.phase) for task in resource.plan(ctx)]


def decommission_facts_request() -> FactsRequest:
    """Only the manifest (with the state of what it names) and the user."""
    return _request([])


def decommission(facts: Facts, purge: bool) -> Plan:
    """Stop and remove everything ibgw put on the host; the ibkr user and the logs stay unless purged."""
    gone = absence.plan_removals(facts.get("manifest"), absence.EMPTY, facts, purge=purge)
    ctx = Context(facts, purge=purge, gone=gone.paths)
    result = Plan(tasks=_run(gone.resources + ([User(present=False)] if purge else []), ctx))
    if ctx.unit_files_removed:
        systemd = SystemdStep(
            kind="systemd", task="systemd", daemon_reload=True, enable=[], start=[], restart=[], reload=[]
        )
        result.tasks.append(Task("systemd daemon-reload", True, step=systemd))
    result.first = [gone.first] if result.changed else []
    return result


class PlanError(Exception):
    """The host cannot get what the inventory pins (no installer for its architecture)."""


def _for_arch(want: Desired, machine: str) -> Desired:
    installs = [(i, i.for_arch(machine)) for i in want.installs]
    missing = sorted({str(i.local.name) for i, chosen in installs if chosen is None})
    if missing:
        raise PlanError(
            f"the host is {machine}, but artifacts.ib_gateway pins no arm64 installer "
            f"(only {', '.join(missing)}): add artifacts.ib_gateway.arm64 {{file, sha256}}"
        )
    return replace(want, installs=[chosen for _, chosen in installs if chosen is not None])
