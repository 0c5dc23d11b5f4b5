"""The import direction DESIGN.md fixes: catalog → ingest → analysis, and nothing → app.

Every ``.py`` file under ``ingest/`` and ``analysis/`` is parsed, and every import in it,
at module level or inside a function, under ``TYPE_CHECKING`` or not, is checked:
``ingest`` may import neither ``catalog`` nor ``app``; ``analysis`` may import none of
``catalog``, ``ingest`` and ``app``. ``importlib.import_module("...")`` and
``__import__("...")`` with a literal name count as imports too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "ingest": {"catalog", "app"},
    "analysis": {"catalog", "ingest", "app"},
}


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
        "from catalog.models import Face\n"
        "def f():\n"
        "    from app import create_app\n"
        "    import importlib\n"
        "    importlib.import_module('catalog.db')\n"
        "from . import sibling\n"
        "from analysis.types import FaceAttributes\n"
    )
    modules = sorted(m for _, m in imported_modules(ast.parse(source), "ingest"))
    assert modules == sorted(
        ["catalog", "catalog.models", "app", "importlib", "catalog.db", "ingest", "analysis.types"]
    )
