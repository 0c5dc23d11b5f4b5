"""A PostgreSQL that hangs (accepts bytes, answers none) costs a request at most
DATABASE_TIMEOUT_SECONDS, then a 503; requests that do not need the database are not
held up; and serving resumes by itself when the server answers again.

The hang is simulated by ``tests.faults.HangingProxy`` in front of the real test database,
because stopping the shared PostgreSQL server would stall every other test worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from app import create_app
from catalog.services import find_service
from catalog.sql import db, serving
from catalog.sql.models import Face
from catalog.storage import Storage
from tests.factories import make_face
from tests.faults import HUNG, HangingProxy, answer_within

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxy(postgres_database: str, postgres_cleaner: Callable[[], None]) -> Iterator[HangingProxy]:
    postgres_cleaner()
    url = make_url(postgres_database)
    proxy = HangingProxy((url.host or "127.0.0.1", url.port or 5432))
    yield proxy
    proxy.close()


@pytest.fixture
def hung_app(proxy: HangingProxy, postgres_database: str, tmp_path: Any) -> Iterator[Flask]:
    """An app whose database is behind ``proxy``, with a 1 s bound."""
    url = make_url(postgres_database).set(host="127.0.0.1", port=proxy.port)
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": url.render_as_string(hide_password=False),
            "STORAGE_URL": (tmp_path / "objects").as_uri(),
            "SERVER_NAME": "facecat.test",
            "SERVED_FLUSH_SECONDS": 0,
            "ONDEMAND_ENABLED": False,
            "DATABASE_TIMEOUT_SECONDS": 1.0,
        }
    )
    yield app
    proxy.resume()
    serving.shutdown(app)
    db.dispose(app)


def test_a_hung_database_gives_503s_then_serving_resumes(
    hung_app: Flask, proxy: HangingProxy
) -> None:
    with db.session_scope(hung_app) as session:
        face: Face = make_face(session, find_service(Storage, hung_app))
    assert answer_within(hung_app, "/face/json").status_code == 200  # pooled, warm

    proxy.hang()
    response = answer_within(hung_app, "/face/json")
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"
    health = answer_within(hung_app, "/healthz")
    assert health.status_code == 503
    assert health.get_json()["checks"]["database"] == "unreachable"
    # Routes that need no database answer as usual meanwhile.
    assert answer_within(hung_app, "/openapi.json").status_code == 200
    image = answer_within(hung_app, f"/img/{face.image_key}")
    assert image.status_code == 200

    proxy.resume()
    again = answer_within(hung_app, "/face/json")
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == face.id
    assert answer_within(hung_app, "/healthz").status_code == 200


def test_a_silent_connection_raises_instead_of_waiting(
    proxy: HangingProxy, postgres_database: str
) -> None:
    import psycopg2

    from catalog.sql.deadline import DatabaseSilent, connection_class

    target = make_url(postgres_database)
    connection = psycopg2.connect(
        host="127.0.0.1",
        port=proxy.port,
        user=target.username,
        dbname=target.database,
        connection_factory=connection_class(0.5),
    )
    cursor = connection.cursor()
    cursor.execute("SELECT 1")
    assert cursor.fetchone() == (1,)
    proxy.hang()
    outcome: list[BaseException | None] = []

    def query() -> None:
        try:
            cursor.execute("SELECT 2")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=query)
    worker.start()
    worker.join(HUNG)
    assert outcome and isinstance(outcome[0], DatabaseSilent), outcome
    connection.close()


def test_while_one_request_probes_a_silent_server_the_others_do_not_wait(
    hung_app: Flask, proxy: HangingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """After a silence, one request at a time waits on the server; the others answer 503
    at once, so they do not each hold a worker thread for the whole bound. The test
    holds the probe's place itself, so no request has to arrive within a time window."""
    from catalog.sql.deadline import server_health

    with db.session_scope(hung_app) as session:
        make_face(session, find_service(Storage, hung_app))
    assert answer_within(hung_app, "/face/json").status_code == 200
    proxy.hang()
    assert answer_within(hung_app, "/face/json").status_code == 503  # the server is suspect
    health = server_health(db.get_serving_engine(hung_app))
    assert health is not None and health.suspect

    with health.probe:  # a probe is waiting on the server
        caplog.clear()
        response = answer_within(hung_app, "/face/json")
        assert response.status_code == 503
        assert "another request is checking it: not waiting" in caplog.text
    caplog.clear()
    assert answer_within(hung_app, "/face/json").status_code == 503  # this one probed
    assert "sent nothing for 1 s" in caplog.text and "not waiting" not in caplog.text

    proxy.resume()
    assert answer_within(hung_app, "/face/json").status_code == 200
    assert not health.suspect
