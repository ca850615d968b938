"""The package's import graph, read from the source (every import counts: TYPE_CHECKING and function-level
ones too): it has no cycles, and the sim and the gate stay out of the provisioning side."""

import ast
from pathlib import Path

import ibgw_provision

PACKAGE = Path(ibgw_provision.__file__).parent
# What sim/ and gate/ must never import, directly or through another module: the inventory, the
# provisioning engine and observation, in the package layout and in today's flat modules.
FORBIDDEN = (
    "inventory",
    "provision",
    "observe",
    "plan",
    "state",
    "render",
    "transport",
    "agent",
    "health",
    "monitor",
)
SERVERS = ("ibgw_provision.sim", "ibgw_provision.gate")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The package modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names if alias.name in modules]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    found = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in modules]
    if source in modules and len(found) < len(node.names):
        found.append(source)  # names defined in the module (or package) itself
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        graph[module] = {
            target
            for node in ast.walk(tree)
            for target in _targets(node, module, is_package, modules)
            if target != module
        }
    return graph


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


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def _forbidden(module: str) -> bool:
    return any(
        module == f"ibgw_provision.{name}" or module.startswith(f"ibgw_provision.{name}.")
        for name in FORBIDDEN
    )


def test_the_graph_sees_type_checking_and_relative_imports():
    graph = import_graph()
    assert "ibgw_provision.tws.codec" in graph["ibgw_provision.sim.session"]  # from ..tws import codec
    assert "ibgw_provision.tws.requests" in graph["ibgw_provision.gate.orders"]  # from ..tws import requests
    assert "ibgw_provision.gate.orders" in graph["ibgw_provision.gate.audit"]  # under TYPE_CHECKING
    assert "ibgw_provision.tws.codec" in graph["ibgw_provision.tws"]  # a package's __init__
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    assert _cycle(import_graph()) is None


def test_sim_and_gate_never_import_the_provisioning_side():
    graph = import_graph()
    for module in graph:
        if module.startswith(SERVERS):
            reached = sorted(m for m in _reachable(graph, module) if _forbidden(m))
            assert not reached, f"{module} imports {reached}"


def test_tws_imports_nothing_else_of_the_package():
    graph = import_graph()
    for module, targets in graph.items():
        if module.startswith("ibgw_provision.tws"):
            assert all(t.startswith("ibgw_provision.tws") for t in targets), (module, targets)
