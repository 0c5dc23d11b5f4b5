"""The batched serving counters (ServedRecorder) and their effect on the JSON."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.orm import Session
from werkzeug.http import http_date as werkzeug_http_date

from catalog.services import install_service
from catalog.sql import db, serving
from catalog.sql.cells import Filters
from catalog.sql.models import Face
from catalog.sql.serving import DrawAhead, ServedRecorder
from catalog.web.api import http_date
from tests.catalog.test_selection import CHI2_CRITICAL_0_001, UNEVEN, add_bare, chi_square
from tests.conftest import _free_port


def stored(db_session: Session, face: Face) -> tuple[int, datetime | None]:
    db_session.expire_all()
    row = db_session.get(Face, face.id)
    return row.times_served, row.last_served


def test_recorder_buffers_until_flush(
    app: Flask, db_session: Session, make_face: Callable[..., Face]
) -> None:
    a, b = make_face(), make_face()
    recorder = ServedRecorder(db.get_engine(app), interval=3600)
    t1 = datetime(2024, 1, 1, tzinfo=UTC)
    t2 = t1 + timedelta(seconds=5)
    recorder.record([a.id, b.id], t1)
    recorder.record([a.id], t2)
    assert recorder.pending_since(a.id) == t2
    assert stored(db_session, a) == (0, None)
    assert recorder.flush() == 2
    assert stored(db_session, a) == (2, t2) and stored(db_session, b) == (1, t1)
    assert recorder.pending_since(a.id) is None
    recorder.close()


def test_recorder_thread_flushes_on_its_own(
    app: Flask, db_session: Session, make_face: Callable[..., Face]
) -> None:
    face = make_face()
    recorder = ServedRecorder(db.get_engine(app), interval=0.05)
    recorder.record([face.id])
    deadline = time.monotonic() + 10
    while stored(db_session, face)[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored(db_session, face)[0] == 1
    recorder.close()


def test_failed_flush_keeps_the_counts() -> None:
    dead = create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{_free_port()}/x")
    recorder = ServedRecorder(dead, interval=3600)
    when = datetime(2024, 1, 1, tzinfo=UTC)
    recorder.record([1, 1, 2], when)
    assert recorder.flush() == 0
    assert recorder._pending == {1: (2, when), 2: (1, when)}
    recorder._pending.clear()  # nothing left for the exit-time flush to retry
    recorder.close()
    dead.dispose()


def test_json_shows_the_previous_serving_before_it_is_written(
    app_factory: Callable[..., Flask], db_session: Session, make_face: Callable[..., Face]
) -> None:
    app = app_factory(SERVED_FLUSH_SECONDS=60)
    face = make_face()
    client = app.test_client()
    assert client.get("/face/json").get_json()["last_served"] is None
    second = client.get("/face/json").get_json()["last_served"]
    assert second is not None
    assert client.get(f"/api/v1/faces/{face.id}").get_json()["last_served"] == second
    assert stored(db_session, face)[0] == 0  # still buffered
    serving.shutdown(app)
    assert stored(db_session, face)[0] == 2


# --- faces drawn ahead (DrawAhead) -------------------------------------------------------


def test_draw_ahead_serves_uniform_faces_with_few_round_trips(
    app_factory: Callable[..., Flask], db_session: Session
) -> None:
    """Through HTTP: still uniform over the filter, and one seek per DRAW_AHEAD faces."""
    app = app_factory(DRAW_AHEAD=8, CELL_CACHE_SECONDS=60, RATELIMIT_LOOKUPS="100000/minute")
    install_service(app, random.Random, random.Random(11))
    add_bare(db_session, UNEVEN)
    ids = db_session.scalars(select(Face.id).where(Face.age.between(21, 40))).all()
    seeks: list[str] = []

    def count_seeks(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "slot" in statement:
            seeks.append(statement)

    with app.app_context():
        engine = db.get_serving_engine()
    event.listen(engine, "before_cursor_execute", count_seeks)
    client = app.test_client()
    draws = 950
    seen: Counter[int] = Counter()
    try:
        for _ in range(draws):
            body = client.get("/face/json?minimum_age=21&maximum_age=40").get_json()
            assert 21 <= body.get("age", -1) <= 40, body
            seen[body["id"]] += 1
    finally:
        event.remove(engine, "before_cursor_execute", count_seeks)
    statistic = chi_square(seen, list(ids), draws)
    assert statistic < CHI2_CRITICAL_0_001[len(ids) - 1], (statistic, seen)
    assert len(seeks) <= draws // 8 + 2, len(seeks)


def test_draw_ahead_keeps_faces_no_longer_than_max_age() -> None:
    calls: list[int] = []

    def draw(n: int) -> list[int]:
        calls.append(n)
        return list(range(n))

    ahead = DrawAhead(size=4, max_age=0.05)
    filters = Filters(gender="female")
    assert [ahead.take(filters, draw) for _ in range(4)] == [3, 2, 1, 0]
    assert calls == [4]
    assert ahead.take(filters, draw) == 3 and calls == [4, 4]  # used up: drawn again
    time.sleep(0.1)
    assert ahead.take(filters, draw) == 3 and calls == [4, 4, 4]  # expired: drawn again


def test_draw_ahead_never_remembers_an_empty_answer_and_bounds_filters() -> None:
    answers: list[list[int]] = [[], [7, 8]]
    ahead = DrawAhead(size=2, max_age=60, max_filters=2)
    assert ahead.take(Filters(), lambda n: answers.pop(0)) is None
    assert ahead.take(Filters(), lambda n: answers.pop(0)) == 8  # asked again at once
    for age in range(5):
        ahead.take(Filters(minimum_age=age), lambda n: [1, 2])
    assert len(ahead._drawn) == 2  # least recently used filters dropped


def test_draw_ahead_of_one_draws_every_time() -> None:
    calls: list[int] = []
    ahead = DrawAhead(size=1, max_age=60)
    for _ in range(3):
        assert ahead.take(Filters(), lambda n: calls.append(n) or [5]) == 5
    assert calls == [1, 1, 1]


# --- the JSON's dates and URLs -----------------------------------------------------------


def test_http_date_matches_werkzeug() -> None:
    for when in (
        datetime(2024, 2, 29, 23, 59, 59),
        datetime(1999, 12, 31, 0, 0, 0, 999999),
        datetime(2026, 11, 21, 13, 5, 7, tzinfo=UTC),
        datetime(2026, 11, 21, 15, 5, 7, tzinfo=timezone(timedelta(hours=2))),
    ):
        assert http_date(when) == werkzeug_http_date(when)


def test_image_urls_follow_the_request_host(app: Flask, make_face: Callable[..., Face]) -> None:
    make_face()
    client = app.test_client()
    for host in ("a.example", "b.example:8080", "a.example"):
        body = client.get("/face/json", headers={"Host": host}).get_json()
        assert body["image_url"].startswith(f"http://{host}/img/faces/")
    body = client.get("/face/json", base_url="https://c.example/prefix").get_json()
    assert body["thumb_url"].startswith("https://c.example/prefix/img/thumbs/")


# --- a dropped database connection ------------------------------------------------------


def test_a_dropped_database_connection_costs_no_request(
    app: Flask, make_face: Callable[..., Face]
) -> None:
    """The serving pool is not pinged; a read on a dead connection is retried once."""
    if not app.config["DATABASE_URL"].startswith("postgresql"):
        pytest.skip("needs a database server that can drop a client's connection")
    face = make_face()
    client = app.test_client()
    assert client.get("/face/json").status_code == 200  # the pool now holds a connection
    with app.app_context():
        engine = db.get_serving_engine()
    with engine.connect() as connection:  # that same pooled connection
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    with db.get_engine(app).connect() as killer:
        assert killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    for path in ("/face/json", f"/api/v1/faces/{face.id}", "/stats", "/healthz"):
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_json())
