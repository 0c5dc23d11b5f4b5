"""Load the scripts under ``tests/perf`` (run by hand, not a package) so tests can call them,
and give them a copy of the committed weights to write into."""

from __future__ import annotations

import importlib.util
import shutil
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


def committed_weights_copy(folder: Path) -> Path:
    """``FOLDER/conditional.pt`` with its provenance: the committed conditional weights, for
    a calibrate command to rewrite without touching the repository's."""
    from ingest.generators import conditional as cond

    weights = folder / "conditional.pt"
    shutil.copy(cond.DEFAULT_WEIGHTS, weights)
    shutil.copy(cond.DEFAULT_PROVENANCE, weights.with_suffix(".json"))
    return weights
