"""Fixtures for ingest tests: where the real model weights live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catalog.services import find_service
from catalog.storage import Storage

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """``FACECAT_MODELS_DIR`` if set (CI fetches there), else the repo's instance folder."""
    env = os.environ.get("FACECAT_MODELS_DIR")
    return Path(env) if env else REPO_ROOT / "instance" / "models"


# --- ingest pipeline fixtures (fake models, real database and storage) -------------------


@pytest.fixture
def session_maker(app):  # type: ignore[no-untyped-def]
    """The app's sessionmaker, as fsck and ``SqlIngestCatalog`` take it."""
    from catalog.sql.db import session_factory

    return session_factory(app)


@pytest.fixture
def ingest(app, session_maker, tmp_path):  # type: ignore[no-untyped-def]
    """``ingest(count, **kw)``: ``run_ingest`` with fake models and local storage defaults.

    Keyword arguments override any ``run_ingest`` argument; ``settings=`` may be a dict of
    ``IngestSettings`` fields.
    """
    from catalog.sql.admission import SqlIngestCatalog
    from ingest.pipeline import run_ingest
    from tests.factories import ingest_settings
    from tests.ingest.fakes import FakeEstimator, FakeGenerator

    def call(count: int, **kwargs):  # type: ignore[no-untyped-def]
        settings = kwargs.pop("settings", {})
        if isinstance(settings, dict):
            settings = ingest_settings(**{"batch_size": 8, "upload_backoff": 0.0, **settings})
        arguments = {
            "generator": FakeGenerator(),
            "estimator": FakeEstimator(),
            "storage": find_service(Storage, app),
            "catalog": SqlIngestCatalog(session_maker),
            "settings": settings,
            "trigger": "test",
            **kwargs,
        }
        return run_ingest(count, **arguments)

    return call


# --- reference outputs (outside the repository) -------------------------------------------


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """``../shared/reference``: the original models' outputs to match (skip if absent)."""
    path = REPO_ROOT / ".." / "shared" / "reference"
    if not path.is_dir():
        pytest.skip(f"reference outputs not found at {path.resolve()}")
    return path
