"""Each kind of resource a host gets, defined once: the facts it reads, how it plans, present or
absent, and the agent step (shapes.py) that converges it.

`request` adds what a resource reads to the facts request; `plan` turns the facts into tasks. An
absent resource is one line, `File(path, present=False)`, and plans as a removal like any other
change. Resources plan in phases: units ibgw no longer runs stop before any file lands (their ports
are then free for a successor), files are removed after them, services act last. plan.py only
orders and runs them; absence.py decides, from the host's manifest, what ibgw may remove.
"""

from __future__ import annotations

import base64
import datetime
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Literal

from ..inventory.secrets import MASK, Secrets
from . import layout, platforms, restarts
from .agent import ini_merge, ini_values
from .shapes import (
    AptStep,
    AttrsStep,
    Facts,
    FactsRequest,
    FileStep,
    IniStep,
    InstallStep,
    Manifest,
    ManifestStep,
    NftDeleteStep,
    PathFacts,
    PendingRecord,
    PendingRestart,
    PendingStep,
    RemoveStep,
    StopStep,
    SystemdStep,
    Task,
    Then,
    UnitFacts,
    UserDelStep,
    UserStep,
    VenvStep,
)
from .wheelhouse import Wheelhouse

SETUP, STOP, FILES, REMOVE, RECORD, SERVICES = range(6)  # the phases, in the order they run
ARM64_MACHINES = ("aarch64", "arm64")
VALIDATORS = {  # run on the host against the new file before it replaces the old one
    "/etc/haproxy/haproxy.cfg": ["haproxy", "-c", "-f", "{}"],  # no -q: it would hide the reason
    "/etc/nginx/nginx.conf": ["nginx", "-t", "-q", "-c", "{}"],
    f"{layout.ETC}/firewall.nft": ["nft", "-c", "-f", "{}"],
}
NO_UNIT = UnitFacts(enabled="", active="")  # a unit the facts do not name
SINCE = "%Y-%m-%dT%H:%M:%SZ"  # as the agent stamps a pending record


@dataclass
class Context:
    """What planning one host shares: its facts, and what resources planned before decided."""

    facts: Facts
    secrets: Secrets = field(default_factory=Secrets)
    policy: restarts.Policy = field(default_factory=restarts.Policy)
    wheelhouse: Wheelhouse | None = None
    release: platforms.Release | None = None  # names the host's packages (Debian 12's when None)
    purge: bool = False  # a removal takes what is otherwise kept (logs, the ibkr user's home)
    gone: set[str] = field(default_factory=set)  # paths this run removes
    uploads: list[tuple[Path, str]] = field(default_factory=list)  # (local, remote)
    restart: set[str] = field(default_factory=set)  # units whose software changed
    reload: set[str] = field(default_factory=set)
    reinstalled: tuple[str, ...] = ()  # trees installed afresh ("dest/"): ibgw's files in them are new
    files: list[tuple[File, Task]] = field(default_factory=list)
    unit_files_removed: bool = False


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---- package, user --------------------------------------------------------------------------


@dataclass(frozen=True)
class Packages:
    """Debian packages (Debian 12's names; the host's release names them), installed by one apt run."""

    names: list[str]
    phase: ClassVar[int] = SETUP
    emits: ClassVar[str] = "apt"

    def request(self, req: FactsRequest) -> None:
        req["packages"] += platforms.every_name(self.names)  # the OS, known from the answer, picks

    def plan(self, ctx: Context) -> list[Task]:
        names = platforms.package_names(self.names, ctx.release) if ctx.release else self.names
        missing = [p for p in names if not ctx.facts["packages"].get(p)]
        tasks = [Task(f"package {p}", p in missing, "install" if p in missing else "") for p in names]
        if missing:
            next(t for t in tasks if t.changed).step = AptStep(
                kind="apt", task=f"install {' '.join(missing)}", packages=missing
            )
        return tasks


@dataclass(frozen=True)
class User:
    """The gateway's system user: no login shell, in no admin group. Absent: deleted (a purge)."""

    name: str = layout.USER
    home: str = layout.HOME
    present: bool = True
    emits: ClassVar[tuple[str, ...]] = ("user", "userdel")

    @property
    def phase(self) -> int:
        return SETUP if self.present else SERVICES

    def request(self, req: FactsRequest) -> None:
        req["user"] = self.name

    def plan(self, ctx: Context) -> list[Task]:
        info, name = ctx.facts["user"], f"user {self.name}"
        if not self.present:
            step = UserDelStep(kind="userdel", task=f"userdel {self.name}", name=self.name)
            return [Task(name, True, "delete: purge", step=step)] if info is not None else []
        step2 = UserStep(kind="user", task=name, name=self.name, home=self.home)
        if info is None:
            return [Task(name, True, "create (system user, no login shell, no sudo)", step=step2)]
        privileged = sorted(set(info["groups"]) & set(layout.PRIVILEGED_GROUPS))
        if privileged:
            return [Task(name, True, f"remove from {', '.join(privileged)}", step=step2)]
        return [Task(name, False)]


# ---- directory, file ------------------------------------------------------------------------


@dataclass(frozen=True)
class Dir:
    """A directory with its owner and mode."""

    path: str
    owner: str = "root"
    group: str = "root"
    mode: int = 0o755
    present: bool = True
    emits: ClassVar[tuple[str, ...]] = ("dir", "remove")

    @property
    def phase(self) -> int:
        return SETUP if self.present else REMOVE

    def request(self, req: FactsRequest) -> None:
        req["paths"].append(self.path)

    def plan(self, ctx: Context) -> list[Task]:
        if not self.present:
            return _removal(self.path, ctx)
        return [_attrs(f"dir {self.path}", self, ctx.facts["paths"].get(self.path), "dir")]


@dataclass(frozen=True)
class File:
    """A file with its content (rendered), and the units its change reloads or restarts."""

    path: str  # absolute path on the host
    content: str = ""
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False  # holds a secret: never shown, never world-readable
    # An INI file the program rewrites itself (jts.ini): written whole only if missing; after
    # that only these keys of its sections are ibgw's, and converge. {section: (key, ...)}
    owned: dict[str, tuple[str, ...]] | None = None
    reload: tuple[str, ...] = ()  # units to reload when it changes
    restart: tuple[str, ...] = ()  # units to restart when it changes
    present: bool = True
    emits: ClassVar[tuple[str, ...]] = ("file", "ini", "attrs", "remove")

    @property
    def phase(self) -> int:
        return FILES if self.present else REMOVE

    def request(self, req: FactsRequest) -> None:
        req["paths"].append(self.path)
        if self.present:
            req["content_unless"][self.path] = sha256(self.content)  # a drifted file's content is read

    def plan(self, ctx: Context) -> list[Task]:
        if not self.present:
            return _removal(self.path, ctx)
        fresh = self.path.startswith(ctx.reinstalled)  # a fresh install brought its own copy (the heap)
        task = _file(self, None if fresh else ctx.facts["paths"].get(self.path), ctx)
        ctx.files.append((self, task))
        return [task]


def _attrs(name: str, want: Dir | File, have: PathFacts | None, kind: Literal["dir", "attrs"]) -> Task:
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


def _file(f: File, have: PathFacts | None, ctx: Context) -> Task:
    name, secrets = f"file {f.path}", ctx.secrets
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
    old = ctx.facts["content"].get(f.path) or ""
    if f.owned is not None:
        return _owned_keys(f, old, have, step)
    return Task(name, True, "content differs (drift or a new render)", _diff(f, old, secrets), step)


def owned_values(f: File) -> dict[str, dict[str, str]]:
    """The values ibgw owns in an INI file the program rewrites, as rendered."""
    rendered = ini_values(f.content)
    owned = f.owned or {}
    return {section: {key: rendered[section][key] for key in keys} for section, keys in owned.items()}


def _owned_keys(f: File, old: str, have: PathFacts, file_step: FileStep) -> Task:
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


def _diff(f: File, old: str, secrets: Secrets) -> str:
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


def _removal(path: str, ctx: Context) -> list[Task]:
    """A path ibgw may remove (only what absence.py chose): a directory with all below it, unless a
    container; nothing when it is not there, or when a tree removed with it holds it."""
    have = ctx.facts["paths"].get(path)
    if (
        have is None
        or path not in ctx.gone
        or any(path.startswith(p + "/") and _tree(p, ctx) for p in ctx.gone)
    ):
        return []
    tree = _tree(path, ctx)
    ctx.unit_files_removed |= path.startswith(layout.UNIT_DIR + "/")
    step = RemoveStep(kind="remove", task=f"remove {path}", path=path, tree=tree)
    detail = "remove" + (" with all below it" if tree else "") + ": no longer in the inventory"
    return [Task(f"{have['kind']} {path}", True, detail, step=step)]


def _tree(path: str, ctx: Context) -> bool:
    have = ctx.facts["paths"].get(path)
    return have is not None and have["kind"] == "dir" and (ctx.purge or path not in layout.CONTAINERS)


# ---- software: ibgw's venv, installers ------------------------------------------------------


@dataclass(frozen=True)
class Venv:
    """ibgw itself, from the wheels shipped with this run; the units that run it restart with it."""

    units: list[str]
    phase: ClassVar[int] = SETUP
    emits: ClassVar[str] = "venv"

    def request(self, req: FactsRequest) -> None:
        req["markers"].append(f"{layout.VENV}/{layout.VENV_STAMP}")

    def plan(self, ctx: Context) -> list[Task]:
        name, wh = f"venv {layout.VENV}", ctx.wheelhouse
        if wh is None or ctx.facts["markers"].get(f"{layout.VENV}/{layout.VENV_STAMP}") == wh.stamp:
            return [Task(name, False)] if wh else []
        ctx.uploads += [(w, f"{layout.WHEELS}/{w.name}") for w in wh.wheels]
        ctx.restart |= set(self.units)
        step = VenvStep(
            kind="venv",
            task=name,
            path=layout.VENV,
            wheels=layout.WHEELS,
            requirement=wh.requirement,
            marker=layout.VENV_STAMP,
            stamp=wh.stamp,
            then={"restart": list(self.units)},
        )
        return [Task(name, True, f"install {wh.requirement} from {len(wh.wheels)} shipped wheels", step=step)]


@dataclass(frozen=True)
class Install:
    """An installer from the operator's artifact cache, unpacked or run into `dest`."""

    local: Path
    sha256: str
    kind: str  # "zip" (IBC) or "installer" (IB Gateway's install4j script)
    dest: str
    base: str  # dest must lie strictly inside it: the agent refuses anything else
    owner: str
    restart: tuple[str, ...]
    arm64: tuple[Path, str] | None = None  # (local, sha256) of the aarch64 installer, if it differs
    group: str = ""  # "ibc", "gateway-paper": its versions replace each other (the last two are kept)
    phase: ClassVar[int] = SETUP
    emits: ClassVar[str] = "install"

    @property
    def upload(self) -> str:
        return f"{layout.UPLOADS}/{self.sha256[:16]}-{self.local.name}"

    def builds(self) -> list[tuple[Path, str]]:
        return [(self.local, self.sha256)] + ([self.arm64] if self.arm64 else [])

    def for_arch(self, machine: str) -> Install | None:
        """The installer for a host's `uname -m`; None when none is pinned for it."""
        if self.kind == "zip" or machine not in ARM64_MACHINES:
            return self
        return replace(self, local=self.arm64[0], sha256=self.arm64[1], arm64=None) if self.arm64 else None

    def request(self, req: FactsRequest) -> None:
        req["markers"].append(f"{self.dest}/{layout.INSTALL_STAMP}")

    def plan(self, ctx: Context) -> list[Task]:
        name = f"install {self.dest}"
        if ctx.facts["markers"].get(f"{self.dest}/{layout.INSTALL_STAMP}") == self.sha256:
            return [Task(name, False)]
        ctx.uploads.append((self.local, self.upload))
        ctx.restart |= set(self.restart)
        ctx.reinstalled += (self.dest + "/",)
        step = InstallStep(
            kind="install",
            task=name,
            upload=self.upload,
            sha256=self.sha256,
            type=self.kind,
            dest=self.dest,
            base=self.base,
            owner=self.owner,
            stamp=layout.INSTALL_STAMP,
            then={"restart": list(self.restart)},
        )
        return [Task(name, True, f"{self.local.name} (sha256 {self.sha256[:12]}…)", step=step)]


# ---- firewall table, units, the manifest ----------------------------------------------------


@dataclass(frozen=True)
class Firewall:
    """ibgw's nftables table, inet ibgw: loaded by its unit (reloaded if flushed), deleted when absent."""

    present: bool = True
    emits: ClassVar[tuple[str, ...]] = ("systemd", "nft_delete")

    @property
    def phase(self) -> int:
        return SETUP if self.present else STOP

    def request(self, req: FactsRequest) -> None:
        req["firewall"] = self.present

    def plan(self, ctx: Context) -> list[Task]:
        if not self.present:
            if not ctx.facts.get("firewall"):
                return []
            drop = NftDeleteStep(kind="nft_delete", task="delete table inet ibgw", table="inet ibgw")
            return [Task("firewall table inet ibgw", True, "delete: the firewall is off", step=drop)]
        unit = ctx.facts["units"].get(layout.FIREWALL_UNIT, NO_UNIT)
        if ctx.facts.get("firewall") is False and unit["active"] == "active":
            ctx.reload.add(layout.FIREWALL_UNIT)  # active (exited), yet its table is gone: load it again
        return []


@dataclass(frozen=True)
class Unit:
    """A unit ibgw must not run, `Unit(name, present=False)`: stopped and disabled before any file step.
    The units it runs are planned together (Units): one systemd step carries all their actions."""

    name: str
    present: bool = True
    phase: ClassVar[int] = STOP
    emits: ClassVar[str] = "stop"

    def request(self, req: FactsRequest) -> None:
        req["units"].append(self.name)

    def plan(self, ctx: Context) -> list[Task]:
        state = ctx.facts["units"].get(self.name)
        if (
            self.present
            or not state
            or (state["enabled"] != "enabled" and state["active"] in ("inactive", "unknown", ""))
        ):
            return []
        stop = StopStep(kind="stop", task=f"stop {self.name}", unit=self.name)
        return [Task(f"service {self.name}", True, "stop and disable: no longer in the inventory", step=stop)]


@dataclass(frozen=True)
class Units:
    """The units the host runs, enabled and active, in start order; a unit restarts or reloads when
    its inputs changed, unless its gateway's restart must wait (restarts.hold): then it is pending."""

    names: list[str]
    gateways: list[restarts.GatewayUnits]
    phase: ClassVar[int] = SERVICES
    emits: ClassVar[tuple[str, ...]] = ("systemd", "pending")

    def request(self, req: FactsRequest) -> None:
        req["units"] += self.names
        req["markers"].append(layout.PENDING)
        req["clients"] = [gw.api_port for gw in self.gateways]  # who a gateway's restart would cut
        req["gates"] = {gw.mode: gw.gate_metrics_port for gw in self.gateways if gw.gate_metrics_port}
        req["pending"] = layout.PENDING_DIR

    def plan(self, ctx: Context) -> list[Task]:
        restart, reload, daemon_reload = self._inputs(ctx)
        pending, held, cleared = self._held(ctx.facts, restart | reload, ctx.policy)
        tasks = self._actions(ctx.facts, restart - held, reload - held, daemon_reload, cleared)
        for _, task in ctx.files:  # jts.ini: its gateway must stop to take ibgw's keys; it waits with it
            if task.step and task.step["kind"] == "ini" and set(task.step["stop"]) & held:
                task.changed, task.step = False, None
                task.detail = "ibgw's keys differ: written at the gateway's pending restart"
        return pending + tasks  # recorded before the systemd step clears the actions owed

    def _inputs(self, ctx: Context) -> tuple[set[str], set[str], bool]:
        """The units to restart, to reload, and whether systemd reloads its unit files: changed inputs,
        actions a failed run still owes, and restarts recorded as pending."""
        facts, wanted, changed = ctx.facts, set(self.names), [f for f, t in ctx.files if t.changed]
        owed = _owed(facts)
        restart = (
            ctx.restart | {u for f in changed for u in f.restart} | (set(owed.get("restart") or ()) & wanted)
        )
        restart |= {u for rec in (facts.get("pending") or {}).values() for u in rec.get("units", ())} & wanted
        reload = (
            {u for f in changed for u in f.reload} | (set(owed.get("reload") or ()) & wanted) | ctx.reload
        )
        daemon_reload = (
            any(f.path.startswith(layout.UNIT_DIR + "/") for f in changed)
            or bool(owed.get("daemon_reload"))
            or ctx.unit_files_removed
        )
        return restart, reload - restart, daemon_reload

    def _actions(
        self, facts: Facts, restart: set[str], reload: set[str], daemon_reload: bool, cleared: list[str]
    ) -> list[Task]:
        """A task per unit; the first that changes carries the one systemd step with every unit's action."""
        actions: dict[str, list[str]] = {"enable": [], "start": [], "restart": [], "reload": []}
        tasks = []
        for unit in self.names:
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
        if any(actions.values()) or daemon_reload or cleared:
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
        return tasks

    def _held(
        self, facts: Facts, bouncing: set[str], policy: restarts.Policy
    ) -> tuple[list[Task], set[str], list[str]]:
        """Per gateway whose running units would restart or reload: may it now? If not, a pending record.
        Returns the pending tasks, the units held, and the pending records a restart now clears."""
        tasks, held, cleared = [], set(), []
        recorded = facts.get("pending") or {}
        for gw in self.gateways:
            main = gw.units[0]
            running = {u for u in gw.units if facts["units"].get(u, NO_UNIT)["active"] == "active"}
            units = sorted(bouncing & running)
            apps = restarts.connected_apps(gw, facts.get("clients") or {}, facts.get("gate_apps") or {})
            reason = restarts.hold(gw, policy, apps) if units else None
            if reason is None:
                cleared += [layout.pending_file(main)] if main in recorded else []
                continue
            held |= set(gw.units)
            record = PendingRecord(units=units, reason=reason, apps=apps)
            detail = f"restart pending: {reason}; `--restart {gw.mode}` or `--restart now` applies it"
            old: dict = dict(recorded.get(main) or {})
            since = old.pop("since", None) or policy.now.astimezone(datetime.UTC).strftime(SINCE)
            step = PendingStep(
                kind="pending", task=f"pending restart {main}", path=layout.pending_file(main), record=record
            )
            shown = PendingRestart(unit=main, units=units, reason=reason, apps=apps, since=since)
            same = old == record
            tasks.append(
                Task(f"restart {main}", not same, detail, step=None if same else step, pending=shown)
            )
        return tasks, held, cleared


def _owed(facts: Facts) -> dict:
    """Unit actions a failed run left owed: its files are already in place, so nothing else shows them."""
    try:
        owed = json.loads(facts["markers"].get(layout.PENDING) or "{}")
    except ValueError:
        return {}
    return owed if isinstance(owed, dict) else {}


@dataclass(frozen=True)
class Record:
    """The manifest of what ibgw created (absence.py), as the host holds it once the run is done;
    None: delete it (a purge)."""

    manifest: Manifest | None
    phase: ClassVar[int] = RECORD
    emits: ClassVar[str] = "manifest"

    def request(self, req: FactsRequest) -> None:
        req["manifest"] = layout.MANIFEST  # the agent reads it, and the state of what it names

    def plan(self, ctx: Context) -> list[Task]:
        name, have = f"manifest {layout.MANIFEST}", ctx.facts.get("manifest")
        if self.manifest is None:
            step = ManifestStep(kind="manifest", task=name, path=layout.MANIFEST, manifest=None)
            return [Task(name, have is not None, "delete: purge", step=step if have is not None else None)]
        if have == self.manifest:
            return [Task(name, False)]
        step = ManifestStep(kind="manifest", task=name, path=layout.MANIFEST, manifest=self.manifest)
        return [Task(name, True, "record what ibgw created", step=step)]


Resource = Packages | User | Dir | File | Venv | Install | Firewall | Unit | Units | Record
