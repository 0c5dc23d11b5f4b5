"""The import direction DESIGN.md fixes: catalog → ingest → analysis, and nothing → app;
inside catalog, web → access → sql, with storage and the service registry below them; and
no import cycle among the runtime modules at all.

Every ``.py`` file of the runtime (``app.py``, ``catalog/``, ``ingest/``, ``analysis/``) is
parsed, and every import in it, at module level or inside a function, under
``TYPE_CHECKING`` or not, is checked. ``importlib.import_module("...")`` and
``__import__("...")`` with a literal name count as imports too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "catalog": {"app"},
    "ingest": {"catalog", "app"},
    "analysis": {"catalog", "ingest", "app"},
}
# Inside catalog: the only catalog modules each room may import (besides its own).
CATALOG_ROOMS = {
    "catalog/services.py": set(),
    "catalog/suspicion.py": set(),
    "catalog/storage": {"catalog.services", "catalog.config", "catalog.suspicion"},
    "catalog/sql": {"catalog.services", "catalog.config", "catalog.suspicion"},
    "catalog/access": {"catalog.services", "catalog.config", "catalog.errors", "catalog.sql"},
    "catalog/facegen": {
        "catalog.services",
        "catalog.config",
        "catalog.errors",
        "catalog.sql",
        "catalog.storage",
    },
    "catalog/web": {
        "catalog.services",
        "catalog.config",
        "catalog.errors",
        "catalog.sql",
        "catalog.storage",
        "catalog.access",
        "catalog.facegen",
    },
}
RUNTIME = ("app.py", "catalog", "ingest", "analysis")


def imported_modules(tree: ast.AST, package: str) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``tree`` (a module of ``package``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays inside the package it is written in
                yield node.lineno, package + ("." + node.module if node.module else "")
            else:
                yield node.lineno, node.module or ""
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0]
            literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
            if name in ("import_module", "__import__") and literal:
                yield node.lineno, first.value


def module_name(path: Path) -> str:
    """``catalog.web.api`` for ``catalog/web/api.py``, ``catalog.web`` for its ``__init__``."""
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_files() -> list[Path]:
    """Every module of the runtime: app.py and the three packages."""
    found = []
    for root in RUNTIME:
        path = REPO_ROOT / root
        found += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return found


def violations(package: str) -> list[str]:
    """``path:line imports module`` for every forbidden import in ``package``."""
    found = []
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in imported_modules(tree, package):
            if module.split(".")[0] in FORBIDDEN[package]:
                found.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_up_the_layers(package: str) -> None:
    found = violations(package)
    assert not found, "imports against catalog → ingest → analysis:\n" + "\n".join(found)


def test_the_check_sees_nested_and_dynamic_imports() -> None:
    source = (
        "import catalog\n"
        "from catalog.sql.models import Face\n"
        "def f():\n"
        "    from app import create_app\n"
        "    import importlib\n"
        "    importlib.import_module('catalog.sql.db')\n"
        "from . import sibling\n"
        "from analysis.types import FaceAttributes\n"
    )
    modules = sorted(m for _, m in imported_modules(ast.parse(source), "ingest"))
    assert modules == sorted(
        [
            "catalog",
            "catalog.sql.models",
            "app",
            "importlib",
            "catalog.sql.db",
            "ingest",
            "analysis.types",
        ]
    )


def room_violations(room: str) -> list[str]:
    """``path:line imports module`` for every catalog import ``room`` may not make."""
    allowed = CATALOG_ROOMS[room]
    own = room.removesuffix(".py").replace("/", ".")
    path = REPO_ROOT / room
    files = [path] if path.is_file() else sorted(path.rglob("*.py"))
    found = []
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for line, module in imported_modules(tree, module_name(file).rpartition(".")[0]):
            inside = module == own or module.startswith(own + ".")
            permitted = any(module == a or module.startswith(a + ".") for a in allowed)
            if module.split(".")[0] == "catalog" and not inside and not permitted:
                found.append(f"{file.relative_to(REPO_ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("room", sorted(CATALOG_ROOMS))
def test_catalog_rooms_import_only_downwards(room: str) -> None:
    found = room_violations(room)
    assert not found, f"{room} may import only {sorted(CATALOG_ROOMS[room])}:\n" + "\n".join(found)


def import_graph() -> dict[str, set[str]]:
    """Module → the runtime modules it imports (a name imported from a package counts as
    its submodule when one of that name exists)."""
    modules = {module_name(path): path for path in runtime_files()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and not node.level and node.module:
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level:
                base = package + ("." + node.module if node.module else "")
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                targets = (
                    [m for _, m in imported_modules(node, package)]
                    if isinstance(node, (ast.Import, ast.Call))
                    else []
                )
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
                    if isinstance(node, ast.ImportFrom):
                        break  # the first (most specific) resolvable name is the import
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), leaving out a
    package importing its own submodules (a re-export, not a cycle of responsibility)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return [
        c
        for c in found
        if not all(
            any(o != x and o.startswith(x + ".") for o in c)
            or any(x.startswith(o + ".") for o in c)
            for x in c
        )
    ]


def test_no_import_cycles_among_runtime_modules() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_check_sees_a_cycle() -> None:
    graph = {"a.x": {"a.y"}, "a.y": {"b.z"}, "b.z": {"a.x"}, "b": {"b.z"}}
    assert cycles(graph) == [["a.x", "a.y", "b.z"]]
    assert cycles({"p": {"p.q"}, "p.q": {"p"}}) == []  # a package and its own submodule
