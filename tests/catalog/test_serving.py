"""The batched serving counters (ServedRecorder) and their effect on the JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from catalog import db, serving
from catalog.models import Face
from catalog.serving import ServedRecorder
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
