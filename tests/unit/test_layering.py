"""The package layering: `runtime/` is shared by both daemons and depends on neither; no import cycles.

Imports are read from the source (ast), so a module-level import that would close a cycle fails here
even when Python happens to resolve it at run time. Imports under `if TYPE_CHECKING:` are skipped:
they exist only for annotations.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agent", "collector", "protos", "runtime", "simulator")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Our modules imported by `path` at run time (top level or inside functions).

    `from package import submodule` counts as importing the submodule, not the package.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:
                package = name.split(".")[: -node.level] if not path.name == "__init__.py" else name.split(".")
                base = ".".join([*package[: len(package) - node.level + 1], node.module])
            submodules = {f"{base}.{a.name}" for a in node.names} & modules
            found.update(submodules)
            if len(submodules) < len(node.names):
                found.add(base)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {m for m in _imports(path, name, set(modules)) if m in modules and m != name}
    return graph


def test_runtime_imports_neither_agent_collector_nor_protos() -> None:
    graph = _graph()
    offenders = {m: sorted(d for d in deps if d.split(".")[0] != "runtime")
                 for m, deps in graph.items() if m.startswith("runtime")}
    assert not {m: d for m, d in offenders.items() if d}


def test_collector_does_not_import_the_agent_for_shared_machinery() -> None:
    graph = _graph()
    shared_from_agent = {m: sorted(d for d in deps if d.startswith("agent"))
                         for m, deps in graph.items() if m.startswith("collector")}
    # The collector may use the agent's analytics (the same code the edge runs) and nothing else.
    allowed = ("agent.analytics",)
    assert not {m: [d for d in deps if not d.startswith(allowed)] for m, deps in shared_from_agent.items()
                if any(not d.startswith(allowed) for d in deps)}


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append([*stack[stack.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
