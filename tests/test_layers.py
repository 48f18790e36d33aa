"""The package's import graph stays one-way: no module imports, at run
time, one that imports it back (directly or through others)."""

from __future__ import annotations

import ast
import pathlib

import journal

ROOT = pathlib.Path(journal.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = ["journal", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: pathlib.Path, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            node.body = []  # annotations only: not an import at run time
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("journal"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("journal"))
    return {name for name in found if name in known}


def test_the_import_graph_has_no_cycle():
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    known = set(paths)
    graph = {name: _runtime_imports(path, known) - {name} for name, path in paths.items()}
    # The package and subpackage __init__ files re-export: they sit on top.
    packages = {name for name, path in paths.items() if path.name == "__init__.py"}
    graph = {name: deps - packages for name, deps in graph.items() if name not in packages}

    state: dict[str, str] = {}
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph.get(name, ())):
            if state.get(dep) == "open":
                cycles.append(trail[trail.index(dep):] + [dep] if dep in trail else [name, dep])
            elif dep not in state:
                visit(dep, trail + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_policies_sit_in_their_order():
    """journal -> _waits -> _ownership -> _table, and _residency -> _table:
    the policies never import the public class or each other upwards."""
    known = {_module_name(p) for p in ROOT.rglob("*.py")}
    order = ["journal._task", "journal._table", "journal._residency", "journal._ownership",
             "journal._waits", "journal.journal"]
    for low, name in enumerate(order):
        imports = _runtime_imports(ROOT / f"{name.split('.')[1]}.py", known)
        assert not imports & set(order[low:]), f"{name} imports {imports & set(order[low:])}"
