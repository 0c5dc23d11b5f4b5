"""Fixtures for ingest tests: where the real model weights live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """``FACECAT_MODELS_DIR`` if set (CI fetches there), else the repo's instance folder."""
    env = os.environ.get("FACECAT_MODELS_DIR")
    return Path(env) if env else REPO_ROOT / "instance" / "models"
