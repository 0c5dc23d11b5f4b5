"""Fixtures for analysis tests: where the weights, reference outputs and face data live.

Tests that need the real weights are marked ``model``; they fail (with a message naming
``facecat models fetch``) rather than skip when the weights are missing, because CI
fetches them and a silent skip would hide a broken fetch. Deselect them with
``-m "not model"``. Reference outputs and UTKFace sit outside the repository
(``../shared``), so tests that need those skip when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT / ".." / "shared"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """``FACECAT_MODELS_DIR`` if set (CI fetches there), else the repo's instance folder."""
    env = os.environ.get("FACECAT_MODELS_DIR")
    return Path(env) if env else REPO_ROOT / "instance" / "models"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference``: the original models' outputs to match."""
    path = SHARED / "reference"
    if not path.is_dir():
        pytest.skip(f"reference outputs not found at {path.resolve()}")
    return path


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    """``../shared/data/utkface-dev``: labelled real faces (never copied into the repo)."""
    path = SHARED / "data" / "utkface-dev"
    if not (path / "labels.csv").is_file():
        pytest.skip(f"UTKFace development set not found at {path.resolve()}")
    return path
