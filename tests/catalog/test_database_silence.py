"""A PostgreSQL that hangs (accepts bytes, answers none) costs a request at most
DATABASE_TIMEOUT_SECONDS, then a 503; requests that do not need the database are not
held up; and serving resumes by itself when the server answers again.

The hang is simulated by ``tests.hanging_proxy`` in front of the real test database,
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
from tests.hanging_proxy import HangingProxy

pytestmark = pytest.mark.postgres

# Far beyond the 1 s bound the app gets: a request that has not answered by then hung.
HUNG = 60.0


@pytest.fixture
def proxy(postgres_database: str, postgres_cleaner: Callable[[], None]) -> Iterator[HangingProxy]:
    postgres_cleaner()
    url = make_url(postgres_database)
    proxy = HangingProxy((url.host or "127.0.0.1", url.port or 5432))
    yield proxy
    proxy.close()


@pytest.fixture
def hung_app(proxy: HangingProxy, postgres_database: str, tmp_path: Any) -> Iterator[Flask]:
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


def answer_of(app: Flask, path: str) -> Any:
    """The response to ``path``, or a failure if the request is still running after HUNG."""
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(app.test_client().get(path)))
    worker.start()
    worker.join(HUNG)
    assert result, f"{path} was still waiting on the hung database after {HUNG:g} s"
    return result[0]


def test_a_hung_database_gives_503s_then_serving_resumes(
    hung_app: Flask, proxy: HangingProxy
) -> None:
    with db.session_scope(hung_app) as session:
        face: Face = make_face(session, find_service(Storage, hung_app))
    assert answer_of(hung_app, "/face/json").status_code == 200  # pooled, warm

    proxy.hang()
    response = answer_of(hung_app, "/face/json")
    assert response.status_code == 503
    assert response.get_json()["error"] == "database_unavailable"
    health = answer_of(hung_app, "/healthz")
    assert health.status_code == 503
    assert health.get_json()["checks"]["database"] == "unreachable"
    # Routes that need no database answer as usual meanwhile.
    assert answer_of(hung_app, "/openapi.json").status_code == 200
    image = answer_of(hung_app, f"/img/{face.image_key}")
    assert image.status_code == 200

    proxy.resume()
    again = answer_of(hung_app, "/face/json")
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["id"] == face.id
    assert answer_of(hung_app, "/healthz").status_code == 200


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
