"""Load the scripts under ``tests/perf`` (run by hand, not a package) so tests and other
benchmarks can call them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def perf_tool(name: str) -> ModuleType:
    """``tests/perf/NAME.py``, loaded by path."""
    path = Path(__file__).resolve().parent / "perf" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_tool", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
