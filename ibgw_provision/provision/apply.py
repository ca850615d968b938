"""Provision hosts: facts in one round trip, a local plan, changes in one batch.

A no-op run of a converged host costs two round trips (facts, nothing else
but the connection). A run with changes adds one apply and, when ibgw itself
must be (re)installed, one upload per wheel.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..inventory.model import Inventory
from ..inventory.secrets import Secrets
from . import memory, platforms, state, wheelhouse
from .plan import Plan, PlanError, Task, facts_request, plan
from .remote import AgentError, call_agent, target
from .transport import SshError, Transport

WHEELHOUSE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "ibgw" / "wheels"


@dataclass
class Report:
    host: str
    tasks: list[Task] = field(default_factory=list)
    failed: str | None = None  # why the host failed, was unreachable or was refused
    round_trips: int = 0
    seconds: float = 0.0
    checked_only: bool = False
    reached: bool = False  # the agent answered: an SSH failure before that is `unreachable`
    unreachable: bool = False
    refused: bool = False  # the inventory asks what the host cannot give (exit 2): nothing was changed
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return sum(not t.changed for t in self.tasks)

    @property
    def changed(self) -> int:
        return sum(t.changed for t in self.tasks)


@dataclass(frozen=True)
class Options:
    check: bool = False
    accept_new: bool = False
    lock_timeout: int = 300  # seconds the host's apt waits for the dpkg lock
    on_event: Callable[[str, str], None] = lambda host, message: None


def provision(inv: Inventory, names: list[str], opts: Options) -> list[Report]:
    """Provision each host in parallel; one host's failure does not stop the others."""
    with ThreadPoolExecutor(max_workers=min(8, len(names)) or 1) as pool:
        return list(pool.map(lambda name: provision_host(inv, name, opts), names))


def provision_host(inv: Inventory, name: str, opts: Options) -> Report:
    report, started = Report(name, checked_only=opts.check), time.monotonic()
    transport = Transport(target(inv, name, opts.accept_new))
    secrets = Secrets()
    try:
        with transport:
            _converge(inv, name, transport, opts, report, secrets)
    except SshError as exc:
        report.failed, report.unreachable = str(exc), not report.reached
    except memory.OverBudget as exc:
        report.failed, report.refused = str(exc), True
    except (AgentError, PlanError, platforms.UnsupportedOS, wheelhouse.WheelhouseError) as exc:
        report.failed = str(exc)
    if report.failed:  # a failing command's output on the host may echo what we sent it
        report.failed = secrets.mask(report.failed)
    report.round_trips, report.seconds = transport.round_trips, time.monotonic() - started
    return report


def _converge(
    inv: Inventory, name: str, transport: Transport, opts: Options, report: Report, secrets: Secrets
) -> None:
    want = state.desired(inv, name, secrets)
    venv = state.needs_venv(inv.hosts[name])
    opts.on_event(name, "reading facts")
    facts = call_agent(transport, facts_request(want, wheels=venv))
    report.reached = True
    release = platforms.release(facts)  # an unsupported OS is refused before anything else
    warning = memory.check(name, inv.hosts[name], facts.get("memory_mb"))
    if warning:
        report.warnings.append(warning)
        opts.on_event(name, f"warning: {warning}")
    wheels = None
    if venv:
        opts.on_event(name, "building wheels")
        wheels = wheelhouse.build(facts["python"], facts["glibc"], facts["arch"], WHEELHOUSE_CACHE)
    the_plan = plan(want, facts, secrets, wheels, release)
    report.tasks = the_plan.tasks
    if opts.check or not the_plan.changed:
        return
    _apply(transport, the_plan, name, opts, report)


def _apply(transport: Transport, the_plan: Plan, name: str, opts: Options, report: Report) -> None:
    if the_plan.uploads:
        opts.on_event(name, f"uploading {len(the_plan.uploads)} files")
        transport.put_many(the_plan.uploads)

    def on_event(event: dict) -> None:
        if event.get("event") == "start":
            opts.on_event(name, event["task"])
        elif event.get("event") == "wait":  # e.g. for the dpkg lock: said every ten seconds or so
            opts.on_event(name, event["message"])

    request = {**the_plan.request(), "lock_timeout": opts.lock_timeout}
    result = call_agent(transport, request, on_event=on_event)
    if result["failed"]:
        report.failed = f"{result['failed']}: {result['error']}"
