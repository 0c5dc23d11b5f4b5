"""Schemathesis against the live app: no 5xx, nothing that contradicts /openapi.json.

Runs through the WSGI interface (no network) on a small seeded catalog, on SQLite and on
PostgreSQL. Hypothesis is derandomised and the example count bounded, so the run is
repeatable and takes well under a minute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from app import create_app
from catalog.services import find_service, install_service
from catalog.sql import db, serving
from catalog.storage import Storage
from catalog.web import openapi
from catalog.web.generate import Studio
from tests.catalog.studio_fakes import random_studio, random_weights
from tests.factories import make_face


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def seeded_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flask]:
    """An app over a migrated database holding a few faces of both genders."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    if request.param == "sqlite":
        path = tmp / "facecat.db"
        path.write_bytes(Path(request.getfixturevalue("sqlite_template")).read_bytes())
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_database")
        cleaner: Callable[[], None] = request.getfixturevalue("postgres_cleaner")
        cleaner()
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": url,
            "STORAGE_URL": (tmp / "objects").as_uri(),
            # The catalog's contract, not generation's: an unmet filter answers no_match
            # at once instead of running the models for every generated example.
            "ONDEMAND_ENABLED": False,
            # Each new avatar renders once, charged to the server's fill capacity: the two
            # avatar operations' 50 examples would spend its default 30 a minute, and its
            # 503 is tested in test_avatar.py.
            "RATELIMIT_ONDEMAND_FILLS": "10000/minute",
        }
    )
    with db.session_scope(app) as session:
        for gender, age in [("female", 8), ("female", 31), ("male", 31), ("male", 64)]:
            make_face(session, find_service(Storage, app), gender=gender, age=age, commit=False)
    # Generation's contract, not the trained weights': a random network renders in ms.
    install_service(app, Studio, random_studio(random_weights(tmp / "weights")))
    yield app
    serving.shutdown(app)
    db.dispose(app)
    if request.param == "postgresql":
        cleaner()


# The document is plain data (catalog.web.openapi), so it loads at collection time without an
# app; test_openapi.py checks the served /openapi.json is this same document. (A lazy
# schemathesis.pytest.from_fixture would be neater but breaks on pytest 9.)
schema = schemathesis.openapi.from_dict(openapi.document())


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_matches_its_document(case: Any, seeded_app: Flask) -> None:
    # positive_data_acceptance is off because two documented rules cannot be written in
    # OpenAPI: minimum_age ≤ maximum_age (schema-valid pairs like 50/40 are a correct 400)
    # and a filter nobody matches (a correct 404 no_match, which the check tolerates).
    case.call_and_validate(app=seeded_app, excluded_checks=[positive_data_acceptance])
