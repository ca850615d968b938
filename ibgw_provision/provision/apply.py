"""Provision hosts: facts in one round trip, a local plan, changes in one batch.

A no-op run of a converged host costs one connection (per hop) and one
command (the facts). A run with changes adds one apply and, when software
must be (re)installed, one upload per file: the login user stages them in a
private directory over SFTP, and the agent, as root, checks each file's
sha256 and moves it into place.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ..inventory.model import Inventory
from ..inventory.secrets import Secrets
from . import memory, platforms, restarts, state, wheelhouse
from .plan import Plan, PlanError, decommission, decommission_facts_request, facts_request, plan
from .remote import AgentError, SshOptions, call_agent, target
from .shapes import Facts, Task
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
    restart: restarts.Mode = "safe"  # "now": restart gateways even with apps connected or in trading hours
    restart_gateways: frozenset[str] = frozenset()  # these gateways (modes) restart now, whatever holds them
    decommission: bool = False  # remove everything ibgw put on the host
    purge: bool = False  # with decommission: the ibkr user, its home and the logs too
    ssh: SshOptions = SshOptions()
    forks: int = 8  # hosts at once
    lock_timeout: int = 300  # seconds the host's apt waits for the dpkg lock
    on_event: Callable[[str, str], None] = lambda host, message: None


def provision(inv: Inventory, names: list[str], opts: Options) -> list[Report]:
    """Provision each host in parallel; one host's failure does not stop the others."""
    with ThreadPoolExecutor(max_workers=max(1, min(opts.forks, len(names)))) as pool:
        return list(pool.map(lambda name: provision_host(inv, name, opts), names))


def _decommission(transport: Transport, name: str, opts: Options, report: Report) -> None:
    opts.on_event(name, "reading facts")
    facts = cast(Facts, call_agent(transport, decommission_facts_request()))
    report.reached = True
    the_plan = decommission(facts, opts.purge)
    report.tasks = the_plan.tasks
    if opts.check or not the_plan.changed:
        return
    _apply(transport, the_plan, name, opts, report)


def provision_host(inv: Inventory, name: str, opts: Options) -> Report:
    report, started = Report(name, checked_only=opts.check), time.monotonic()
    transport = Transport(target(inv, name, opts.accept_new, opts.ssh))
    secrets = Secrets()
    try:
        with transport:
            if opts.decommission:
                _decommission(transport, name, opts, report)
            else:
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
    want = state.desired(inv, name, secrets, transport.login_user)  # the firewall names who logged in
    venv = state.needs_venv(inv.hosts[name])
    opts.on_event(name, "reading facts")
    facts = cast(Facts, call_agent(transport, facts_request(want, wheels=venv)))
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
    policy = restarts.Policy(opts.restart, gateways=opts.restart_gateways)
    the_plan = plan(want, facts, secrets, wheels, policy, release)
    report.tasks = the_plan.tasks
    if opts.check or not the_plan.changed:
        return
    _apply(transport, the_plan, name, opts, report)


def _apply(transport: Transport, the_plan: Plan, name: str, opts: Options, report: Report) -> None:
    request = {**the_plan.request(), "lock_timeout": opts.lock_timeout}
    stage = None
    if the_plan.uploads:
        opts.on_event(name, f"uploading {len(the_plan.uploads)} files")
        stage, step = _stage(transport, the_plan.uploads)
        request["steps"].insert(0, step)

    def on_event(event: dict) -> None:
        if event.get("event") == "start":
            opts.on_event(name, event["task"])
        elif event.get("event") == "wait":  # e.g. for the dpkg lock: said every ten seconds or so
            opts.on_event(name, event["message"])

    try:
        result = call_agent(transport, request, on_event=on_event)
    except AgentError:
        if stage:  # the agent never ran, so never removed it: the login user owns it
            transport.run(f"rm -rf -- {shlex.quote(stage)}")
        raise
    if result["failed"]:
        report.failed = f"{result['failed']}: {result['error']}"


def _stage(transport: Transport, uploads: list[tuple[Path, str]]) -> tuple[str, dict]:
    """Upload as the login user into a private staging directory; the step that moves them into place."""
    stage, staged = transport.stage([local for local, _ in uploads])
    files = [
        {
            "from": there,
            "to": remote,
            "sha256": _sha256(local),
            "owner": "root",
            "group": "root",
            "mode": 0o644,
        }
        for (local, remote), there in zip(uploads, staged, strict=True)
    ]
    return stage, {
        "kind": "uploads",
        "task": f"place {len(files)} uploaded files",
        "stage": stage,
        "files": files,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
