"""Compare the desired state with a host's facts, read once, and list what must change.

The plan is pure: facts in, tasks out. Each changed task carries the agent
step that converges it; services restart only when their own inputs changed.
"""

from __future__ import annotations

import base64
import datetime
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Literal

from ..inventory.secrets import MASK, Secrets
from . import absence, layout, platforms, restarts
from .agent import ini_merge, ini_values
from .render import ManagedFile
from .shapes import (
    AptStep,
    AttrsStep,
    Facts,
    FileStep,
    IniStep,
    InstallStep,
    PathFacts,
    PendingRecord,
    PendingRestart,
    PendingStep,
    Step,
    SystemdStep,
    Task,
    Then,
    UnitFacts,
    UserDelStep,
    UserStep,
    VenvStep,
)
from .state import Desired, Dir, Install
from .wheelhouse import Wheelhouse

VALIDATORS = {  # run on the host against the new file before it replaces the old one
    "/etc/haproxy/haproxy.cfg": ["haproxy", "-c", "-f", "{}"],  # no -q: it would hide the reason
    "/etc/nginx/nginx.conf": ["nginx", "-t", "-q", "-c", "{}"],
    f"{layout.ETC}/firewall.nft": ["nft", "-c", "-f", "{}"],
}


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


def facts_request(want: Desired, wheels: bool) -> dict:
    """What to read from the host, in one round trip."""
    return {
        "op": "facts",
        "supported": platforms.supported(),
        "packages": platforms.every_name(want.packages),  # the OS, known from this answer, picks the names
        "user": layout.USER,
        "paths": [d.path for d in want.dirs] + [f.path for f in want.files] + want.absent,
        "content_unless": {f.path: sha256(f.content) for f in want.files},
        "units": want.units,
        "markers": ([f"{layout.VENV}/{layout.VENV_STAMP}"] if wheels else [])
        + [f"{i.dest}/{layout.INSTALL_STAMP}" for i in want.installs]
        + [layout.PENDING],
        "firewall": layout.FIREWALL_UNIT in want.units,
        "manifest": layout.MANIFEST,  # the agent reads it, and the state of what it names
        "clients": [gw.api_port for gw in want.gateways],  # who a gateway's restart would cut
        "gates": {gw.mode: gw.gate_metrics_port for gw in want.gateways if gw.gate_metrics_port},
        "pending": layout.PENDING_DIR,
    }


def plan(
    want: Desired,
    facts: Facts,
    secrets: Secrets,
    wheelhouse: Wheelhouse | None = None,
    policy: restarts.Policy | None = None,
    release: platforms.Release | None = None,
) -> Plan:
    """release: the host's OS, which names its packages (Debian 12's names when None)."""
    result = Plan()
    names = platforms.package_names(want.packages, release) if release else want.packages
    result.tasks += _packages(names, facts)
    result.tasks.append(_user(facts))
    result.tasks += [_attrs(f"dir {d.path}", d, facts["paths"].get(d.path), "dir") for d in want.dirs]
    restart: set[str] = set()
    if wheelhouse:
        task = _venv(wheelhouse, facts, result)
        result.tasks.append(task)
        restart |= set(want.venv_units) if task.changed else set()
        if task.step and task.step["kind"] == "venv":
            task.step["then"] = {"restart": list(want.venv_units)}
    want = _for_arch(want, facts.get("arch", "x86_64"))
    installs = [_install(i, facts, result) for i in want.installs]
    result.tasks += installs
    reinstalled = [i.dest + "/" for i, t in zip(want.installs, installs, strict=True) if t.changed]
    restart |= {u for i, t in zip(want.installs, installs, strict=True) if t.changed for u in i.restart}
    for i, t in zip(want.installs, installs, strict=True):
        if t.step and t.step["kind"] == "install":
            t.step["then"] = {"restart": list(i.restart)}
    # A fresh install brings its own copies of files we manage inside it (the heap).
    paths = {p: v for p, v in facts["paths"].items() if not p.startswith(tuple(reinstalled))}
    new = absence.wanted(want, wheelhouse)
    gone = absence.plan_removals(facts.get("manifest"), new, facts, tuple(want.absent))
    result.tasks += gone.stop  # the stop phase: ports are free before a successor's config lands
    facts = {**facts, "paths": paths}
    file_tasks = [(f, _file(f, facts, secrets)) for f in want.files]
    result.tasks += [t for _, t in file_tasks]
    result.tasks += gone.remove
    result.tasks += [gone.record]
    changed_files = [f for f, t in file_tasks if t.changed]
    units, held = _units(want, facts, changed_files, restart, gone.daemon_reload, policy or restarts.Policy())
    for _, task in file_tasks:  # jts.ini: its gateway must stop to take ibgw's keys; it waits with it
        if task.step and task.step["kind"] == "ini" and set(task.step["stop"]) & held:
            task.changed, task.step = False, None
            task.detail = "ibgw's keys differ: written at the gateway's pending restart"
    result.tasks += units
    result.first = [gone.first] if result.changed else []
    return result


def decommission_facts_request() -> dict:
    """Only the manifest (with the state of what it names) and the user."""
    empty: list[str] = []
    return {
        "op": "facts",
        "packages": empty,
        "user": layout.USER,
        "paths": empty,
        "units": empty,
        "markers": empty,
        "manifest": layout.MANIFEST,
    }


def decommission(facts: Facts, purge: bool) -> Plan:
    """Stop and remove everything ibgw put on the host; the ibkr user and the logs stay unless purged."""
    nothing = absence.EMPTY
    gone = absence.plan_removals(facts.get("manifest"), nothing, facts, purge=purge)
    result = Plan(tasks=gone.stop + gone.remove + [gone.record])
    if purge and facts["user"] is not None:
        userdel = UserDelStep(kind="userdel", task=f"userdel {layout.USER}", name=layout.USER)
        result.tasks.append(Task(f"user {layout.USER}", True, "delete: purge", step=userdel))
    if gone.daemon_reload:
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


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _packages(names: list[str], facts: Facts) -> list[Task]:
    missing = [p for p in names if not facts["packages"].get(p)]
    tasks = [Task(f"package {p}", p in missing, "install" if p in missing else "") for p in names]
    if missing:  # one apt run installs them all
        next(t for t in tasks if t.changed).step = AptStep(
            kind="apt", task=f"install {' '.join(missing)}", packages=missing
        )
    return tasks


def _user(facts: Facts) -> Task:
    info = facts["user"]
    step = UserStep(kind="user", task=f"user {layout.USER}", name=layout.USER, home=layout.HOME)
    if info is None:
        return Task(f"user {layout.USER}", True, "create (system user, no login shell, no sudo)", step=step)
    privileged = sorted(set(info["groups"]) & set(layout.PRIVILEGED_GROUPS))
    if privileged:
        return Task(f"user {layout.USER}", True, f"remove from {', '.join(privileged)}", step=step)
    return Task(f"user {layout.USER}", False)


def _attrs(name: str, want: Dir | ManagedFile, have: PathFacts | None, kind: Literal["dir", "attrs"]) -> Task:
    """A directory, or a file's owner and mode."""
    step = AttrsStep(kind=kind, task=name, path=want.path, owner=want.owner, group=want.group, mode=want.mode)
    if have is None:
        return Task(name, True, "create", step=step)
    diffs = [
        f"{label} {old} -> {new}"
        for label, old, new in (
            ("owner", have["owner"], want.owner),
            ("group", have["group"], want.group),
            ("mode", f"{have['mode']:04o}", f"{want.mode:04o}"),
        )
        if old != new
    ]
    return Task(name, bool(diffs), ", ".join(diffs), step=step if diffs else None)


def _file(f: ManagedFile, facts: Facts, secrets: Secrets) -> Task:
    name, have = f"file {f.path}", facts["paths"].get(f.path)
    then = Then(
        restart=list(f.restart), reload=list(f.reload), daemon_reload=f.path.startswith(layout.UNIT_DIR + "/")
    )
    step = FileStep(
        kind="file",
        task=name,
        path=f.path,
        owner=f.owner,
        group=f.group,
        mode=f.mode,
        content=base64.b64encode(f.content.encode()).decode(),
        validate=VALIDATORS.get(f.path),
        then=then,
    )
    if have is None:
        return Task(name, True, "create", _diff(f, "", secrets), step)
    if have.get("kind", "file") != "file":  # a symlink (or a directory) where our file belongs
        return Task(name, True, f"replace a {have['kind']}", _diff(f, "", secrets), step)
    if have["sha256"] == sha256(f.content):
        return _attrs(name, f, have, "attrs")
    old = facts["content"].get(f.path) or ""
    if f.owned is not None:
        return _owned_keys(f, old, have, step)
    return Task(name, True, "content differs (drift or a new render)", _diff(f, old, secrets), step)


def owned_values(f: ManagedFile) -> dict[str, dict[str, str]]:
    """The values ibgw owns in an INI file the program rewrites, as rendered."""
    rendered = ini_values(f.content)
    owned = f.owned or {}
    return {section: {key: rendered[section][key] for key in keys} for section, keys in owned.items()}


def _owned_keys(f: ManagedFile, old: str, have: PathFacts, file_step: FileStep) -> Task:
    """Only ibgw's keys are compared and converged; the rest is the program's own."""
    name, want = f"file {f.path}", owned_values(f)
    current = ini_values(old)
    if all(
        current.get(section, {}).get(key) == value
        for section, keys in want.items()
        for key, value in keys.items()
    ):
        return _attrs(name, f, have, "attrs")
    merged = ini_merge(old, want)
    diff = "".join(
        difflib.unified_diff(
            old.splitlines(True), merged.splitlines(True), f"{f.path} (host)", f"{f.path} (ibgw)"
        )
    )
    step = IniStep(
        kind="ini",
        task=file_step["task"],
        path=f.path,
        owner=f.owner,
        group=f.group,
        mode=f.mode,
        values=want,
        seed=file_step["content"],
        stop=list(f.restart),
        then=file_step["then"],
    )
    return Task(name, True, "ibgw's keys differ", diff, step)


def _diff(f: ManagedFile, old: str, secrets: Secrets) -> str:
    if f.secret:
        old, new = _secret_file_lines(old, f.content, secrets)
    else:  # rendered from the inventory alone: only host lines ibgw would not write can hold a secret
        new, ours = f.content, set(f.content.splitlines())
        old = "".join(
            line if line.rstrip("\r\n") in ours else secrets.mask(line) for line in old.splitlines(True)
        )
    return "".join(
        difflib.unified_diff(
            old.splitlines(True), new.splitlines(True), f"{f.path} (host)", f"{f.path} (ibgw)"
        )
    )


# A key named like a secret (IbPassword, FIXLoginId), not merely containing one (BypassOrderPrecautions).
SECRET_NAME = re.compile(
    r"(password|passwd|passphrase|secret|token|loginid|username|userid|credentials?)$", re.I
)
KEY_VALUE = re.compile(r"^\s*([^=\s#;][^=]*?)\s*=\s*(.*?)\s*$")
COMMENT = re.compile(r"^\s*[#;]\s*")


def _secret_file_lines(old: str, raw_new: str, secrets: Secrets) -> tuple[str, str]:
    """A secret file's two sides with no content that could hold a secret: the value of every secret key
    (by name, or because ibgw writes a secret there), of every key ibgw does not write, of any line that is
    not `key=value`, every comment ibgw does not write or that holds a secret, old or new, are masked; a
    changed secret is marked. Equal lines mask equally, so masking adds no line to the diff."""
    new_pairs, old_pairs = _pairs(raw_new), _pairs(old)
    known = set(secrets.values) | {MASK}
    secret_keys = {k for k, v in new_pairs.items() if SECRET_NAME.search(k) or v in known}
    secret_keys |= {k for k in old_pairs if SECRET_NAME.search(k)}
    known |= {v for k, v in (old_pairs | new_pairs).items() if k in secret_keys and v}
    ours = set(raw_new.splitlines())

    def hide(text: str, mark: bool) -> str:
        body = text.rstrip("\r\n")
        comment = COMMENT.match(body)
        match = KEY_VALUE.match(body[comment.end() :] if comment else body)
        if not body.strip():
            return text
        if comment:  # the host's own comments may say anything
            secret = (match and match[1].casefold() in secret_keys) or any(v in body for v in known)
            return f"{comment.group().rstrip()} {MASK}\n" if secret or body not in ours else text
        if not match:
            return f"{MASK}\n"
        key, folded = match[1], match[1].casefold()
        if folded in secret_keys or folded not in new_pairs or any(v in match[2] for v in known):
            changed = mark and folded in secret_keys and old_pairs.get(folded) != new_pairs.get(folded)
            return f"{key}={MASK}{' (changed)' if changed else ''}\n"
        return text

    return (
        "".join(hide(t, False) for t in old.splitlines(True)),
        "".join(hide(t, True) for t in raw_new.splitlines(True)),
    )


def _pairs(text: str) -> dict[str, str]:
    """key (case-folded) -> value, of every `key = value` line that is not a comment; the last one wins."""
    found = {}
    for text_line in text.splitlines():
        if not COMMENT.match(text_line) and (match := KEY_VALUE.match(text_line)):
            found[match[1].casefold()] = match[2]
    return found


def _venv(wh: Wheelhouse, facts: Facts, result: Plan) -> Task:
    name = f"venv {layout.VENV}"
    if facts["markers"].get(f"{layout.VENV}/{layout.VENV_STAMP}") == wh.stamp:
        return Task(name, False)
    result.uploads += [(w, f"{layout.WHEELS}/{w.name}") for w in wh.wheels]
    step = VenvStep(
        kind="venv",
        task=name,
        path=layout.VENV,
        wheels=layout.WHEELS,
        requirement=wh.requirement,
        marker=layout.VENV_STAMP,
        stamp=wh.stamp,
    )
    return Task(name, True, f"install {wh.requirement} from {len(wh.wheels)} shipped wheels", step=step)


def _install(install: Install, facts: Facts, result: Plan) -> Task:
    name = f"install {install.dest}"
    if facts["markers"].get(f"{install.dest}/{layout.INSTALL_STAMP}") == install.sha256:
        return Task(name, False)
    result.uploads.append((install.local, install.upload))
    step = InstallStep(
        kind="install",
        task=name,
        upload=install.upload,
        sha256=install.sha256,
        type=install.kind,
        dest=install.dest,
        base=install.base,
        owner=install.owner,
        stamp=layout.INSTALL_STAMP,
    )
    return Task(name, True, f"{install.local.name} (sha256 {install.sha256[:12]}…)", step=step)


NO_UNIT = UnitFacts(enabled="", active="")  # a unit the facts do not name
SINCE = "%Y-%m-%dT%H:%M:%SZ"  # as the agent stamps a pending record


def _pending(facts: Facts) -> dict:
    """Unit actions a failed run left owed: its files are already in place, so nothing else shows them."""
    try:
        owed = json.loads(facts["markers"].get(layout.PENDING) or "{}")
    except ValueError:
        return {}
    return owed if isinstance(owed, dict) else {}


def _units(
    want: Desired,
    facts: Facts,
    changed: list[ManagedFile],
    restart: set[str],
    removed_units: bool,
    policy: restarts.Policy,
) -> tuple[list[Task], set[str]]:
    """The systemd step, and the units whose restart waits (restarts.hold)."""
    owed = _pending(facts)
    restart |= {u for f in changed for u in f.restart} | (set(owed.get("restart") or ()) & set(want.units))
    restart |= {u for record in (facts.get("pending") or {}).values() for u in record.get("units", ())} & set(
        want.units
    )
    reload = (
        {u for f in changed for u in f.reload} | (set(owed.get("reload") or ()) & set(want.units))
    ) - restart
    fw = facts["units"].get(layout.FIREWALL_UNIT, NO_UNIT)
    if facts.get("firewall") is False and fw["active"] == "active" and layout.FIREWALL_UNIT not in restart:
        reload.add(layout.FIREWALL_UNIT)  # active (exited), yet its table is gone: load it again
    daemon_reload = (
        any(f.path.startswith(layout.UNIT_DIR + "/") for f in changed)
        or bool(owed.get("daemon_reload"))
        or removed_units
    )
    pending, held, cleared = _held(want, facts, restart | reload, policy)
    restart, reload = restart - held, reload - held
    actions: dict[str, list[str]] = {"enable": [], "start": [], "restart": [], "reload": []}
    tasks = []
    for unit in want.units:
        state = facts["units"].get(unit, NO_UNIT)
        active = state["active"] == "active"
        todo = ["enable"] if state["enabled"] != "enabled" else []
        # A package's postinst may have started a unit before its config was
        # written, and `start` would leave it on the old config: restart it.
        if unit in restart or (unit in reload and not active):
            todo.append("restart")
        elif unit in reload:
            todo.append("reload")
        elif not active:
            todo.append("start")
        for verb in todo:
            actions[verb].append(unit)
        tasks.append(Task(f"service {unit}", bool(todo), ", ".join(todo)))
    if any(actions.values()) or daemon_reload or cleared:  # one step carries every unit's action
        carrier = next((t for t in tasks if t.changed), None)
        if carrier is None:
            carrier = Task("systemd daemon-reload", True)
            tasks.append(carrier)
        carrier.step = SystemdStep(
            kind="systemd",
            task="systemd",
            daemon_reload=daemon_reload,
            enable=actions["enable"],
            start=actions["start"],
            restart=actions["restart"],
            reload=actions["reload"],
            clear=cleared,
        )
    return tasks + pending, held


def _held(
    want: Desired, facts: Facts, bouncing: set[str], policy: restarts.Policy
) -> tuple[list[Task], set[str], list[str]]:
    """Per gateway whose running units would restart or reload: may it now? If not, a pending record.
    Returns the pending tasks, the units held, and the pending records a restart now clears."""
    tasks, held, cleared = [], set(), []
    recorded = facts.get("pending") or {}
    for gw in want.gateways:
        main = gw.units[0]
        running = {u for u in gw.units if facts["units"].get(u, NO_UNIT)["active"] == "active"}
        units = sorted(bouncing & running)
        if not units:
            cleared += [layout.pending_file(main)] if main in recorded else []
            continue
        apps = restarts.connected_apps(gw, facts.get("clients") or {}, facts.get("gate_apps") or {})
        reason = restarts.hold(gw, policy, apps)
        if reason is None:
            cleared += [layout.pending_file(main)] if main in recorded else []
            continue
        held |= set(gw.units)
        record = PendingRecord(units=units, reason=reason, apps=apps)
        detail = f"restart pending: {reason}; `--restart {gw.mode}` or `--restart now` applies it"
        old: dict = dict(recorded.get(main) or {})
        since = old.pop("since", None) or policy.now.astimezone(datetime.UTC).strftime(SINCE)
        same = old == record
        step = PendingStep(
            kind="pending", task=f"pending restart {main}", path=layout.pending_file(main), record=record
        )
        shown = PendingRestart(unit=main, units=units, reason=reason, apps=apps, since=since)
        tasks.append(Task(f"restart {main}", not same, detail, step=None if same else step, pending=shown))
    return tasks, held, cleared
