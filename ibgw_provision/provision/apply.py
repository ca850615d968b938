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
from typing import cast

from ..inventory.model import Inventory
from ..inventory.secrets import Secrets
from . import restarts, state, wheelhouse
from .plan import Plan, PlanError, decommission, decommission_facts_request, facts_request, plan
from .remote import AgentError, call_agent, target
from .shapes import Facts, Task
from .transport import SshError, Transport

WHEELHOUSE_CACHE = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "ibgw" / "wheels"


@dataclass
class Report:
    host: str
    tasks: list[Task] = field(default_factory=list)
    failed: str | None = None
    round_trips: int = 0
    seconds: float = 0.0
    checked_only: bool = False

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
    restart: restarts.Mode = "safe"  # "now": restart gateways even with apps connected or in trading hours
    decommission: bool = False  # remove everything ibgw put on the host
    purge: bool = False  # with decommission: the ibkr user, its home and the logs too
    on_event: Callable[[str, str], None] = lambda host, message: None


def provision(inv: Inventory, names: list[str], opts: Options) -> list[Report]:
    """Provision each host in parallel; one host's failure does not stop the others."""
    with ThreadPoolExecutor(max_workers=min(8, len(names)) or 1) as pool:
        return list(pool.map(lambda name: provision_host(inv, name, opts), names))


def _decommission(transport: Transport, name: str, opts: Options, report: Report) -> None:
    opts.on_event(name, "reading facts")
    facts = cast(Facts, call_agent(transport, decommission_facts_request()))
    the_plan = decommission(facts, opts.purge)
    report.tasks = the_plan.tasks
    if opts.check or not the_plan.changed:
        return
    _apply(transport, the_plan, name, opts, report)


def provision_host(inv: Inventory, name: str, opts: Options) -> Report:
    report, started = Report(name, checked_only=opts.check), time.monotonic()
    transport = Transport(target(inv, name, opts.accept_new))
    secrets = Secrets()
    try:
        with transport:
            if opts.decommission:
                _decommission(transport, name, opts, report)
            else:
                _converge(inv, name, transport, opts, report, secrets)
    except (SshError, AgentError, PlanError, wheelhouse.WheelhouseError) as exc:
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
    facts = cast(Facts, call_agent(transport, facts_request(want, wheels=venv)))
    wheels = None
    if venv:
        opts.on_event(name, "building wheels")
        wheels = wheelhouse.build(facts["python"], facts["glibc"], facts["arch"], WHEELHOUSE_CACHE)
    the_plan = plan(want, facts, secrets, wheels, restarts.Policy(opts.restart))
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

    result = call_agent(transport, the_plan.request(), on_event=on_event)
    if result["failed"]:
        report.failed = f"{result['failed']}: {result['error']}"
