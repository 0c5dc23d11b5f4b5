"""A PostgreSQL of the test's own, stopped with SIGSTOP and then killed with SIGKILL:
requests that need it answer 503 within their bound, those that do not answer as usual,
``/healthz`` says which dependency is down, and serving resumes by itself when the server
is back. (The shared test server cannot be stopped: every other test worker uses it.)
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import create_app
from catalog.services import find_service
from catalog.sql import db, serving
from catalog.storage import Storage
from tests.conftest import unavailable
from tests.factories import make_face
from tests.faults import PrivatePostgres, answer_within, postgres_tool

pytestmark = pytest.mark.postgres


@pytest.fixture
def private_postgres(tmp_path: Path) -> Iterator[PrivatePostgres]:
    if postgres_tool("initdb") is None:
        unavailable("PostgreSQL's initdb is not installed")
    server = PrivatePostgres(tmp_path)
    server.start()
    yield server
    server.stop()


def assert_database_down(app: object, image_path: str) -> None:
    """503 for what needs the database, 200 for what does not, /healthz naming it."""
    response = answer_within(app, "/face/json")  # type: ignore[arg-type]
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"
    health = answer_within(app, "/healthz")  # type: ignore[arg-type]
    assert health.status_code == 503
    assert health.get_json()["checks"]["database"] == "unreachable"
    assert answer_within(app, "/openapi.json").status_code == 200  # type: ignore[arg-type]
    assert answer_within(app, image_path).status_code == 200  # type: ignore[arg-type]


def test_a_stopped_then_killed_postgres(private_postgres: PrivatePostgres, tmp_path: Path) -> None:
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": private_postgres.url,
            "STORAGE_URL": (tmp_path / "objects").as_uri(),
            "SERVER_NAME": "facecat.test",
            "SERVED_FLUSH_SECONDS": 0,
            "ONDEMAND_ENABLED": False,
            "DATABASE_TIMEOUT_SECONDS": 1.0,
        }
    )
    db.upgrade(app)
    with db.session_scope(app) as session:
        face = make_face(session, find_service(Storage, app))
    image_path = f"/img/{face.image_key}"
    try:
        assert answer_within(app, "/face/json").status_code == 200  # connections pooled

        private_postgres.signal(signal.SIGSTOP)
        try:
            assert_database_down(app, image_path)
        finally:
            private_postgres.signal(signal.SIGCONT)
        assert answer_within(app, "/face/json").status_code == 200

        private_postgres.kill()
        assert_database_down(app, image_path)
        private_postgres.start()
        again = answer_within(app, "/face/json")
        assert again.status_code == 200, again.get_json()
        assert again.get_json()["id"] == face.id
        assert answer_within(app, "/healthz").status_code == 200
    finally:
        serving.shutdown(app)
        db.dispose(app)
