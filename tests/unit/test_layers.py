"""The package's rooms depend in one direction: inventory -> render/plan/apply -> observe, and the
TWS wire protocol in tws/ alone, which sim and gate use (never the inventory or the engine)."""

from __future__ import annotations

import ast
from pathlib import Path

import ibgw_provision

PACKAGE = Path(ibgw_provision.__file__).parent
CORE = {"errors", "yamlsrc", "constrained", "timefmt"}  # leaves every room may use
ALLOWED = {
    "core": {"core"},
    "tws": {"tws"},
    "service": {"service", "core"},
    "inventory": {"inventory", "core"},
    "provision": {"provision", "inventory", "core"},
    "observe": {"observe", "provision", "inventory", "tws", "pki", "core"},
    "sim": {"sim", "tws", "service", "core"},
    "gate": {"gate", "tws", "service", "core"},
    "pki": {"pki", "inventory", "core"},
    "tunnel": {"tunnel", "service", "core"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["ibgw_provision", *path.relative_to(PACKAGE).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The ibgw modules that module `name` imports anywhere in its body (deferred imports too)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(
                    package[: len(package) - node.level + 1] + ([node.module] if node.module else [])
                )
            else:
                base = node.module or ""
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    return "cli" if parts[1] in ("cli", "__main__") else parts[1]


def test_every_room_is_known():
    assert {room(m) for m in MODULES} == set(ALLOWED) | {"cli"}


def test_rooms_depend_in_one_direction():
    wrong = sorted(
        f"{m} imports {d}"
        for m, deps in GRAPH.items()
        if room(m) != "cli"
        for d in deps
        if room(d) not in ALLOWED[room(m)]
    )
    assert not wrong, wrong


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `graph`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_the_graph_sees_type_checking_relative_and_deferred_imports():
    assert "ibgw_provision.tws.codec" in GRAPH["ibgw_provision.sim.session"]  # from ..tws import codec
    assert "ibgw_provision.tws.requests" in GRAPH["ibgw_provision.gate.orders"]
    assert "ibgw_provision.gate.orders" in GRAPH["ibgw_provision.gate.audit"]  # under TYPE_CHECKING
    assert "ibgw_provision.tws.codec" in GRAPH["ibgw_provision.tws"]  # a package's __init__
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    assert _cycle(GRAPH) is None
