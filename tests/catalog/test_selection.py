"""catalog.sql.selection: dense slots, uniform picks, flat cost, races, serving counters."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from flask import Flask
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from catalog.sql import cells, db
from catalog.sql.cells import CellCache, CellCount, Filters, count_matching, verify_cells
from catalog.sql.models import Face, FaceCell
from catalog.sql.selection import (
    add_face,
    draw_positions,
    pick_random,
    record_served,
    remove_face,
)

# Upper 0.1% points of the chi-square distribution (scipy is not a dependency), from
# NIST/SEMATECH e-Handbook, table 1.3.6.7.4.
CHI2_CRITICAL_0_001 = {11: 31.264, 18: 42.312, 19: 43.820}


def chi_square(observed: Counter, categories: list, draws: int) -> float:
    """Pearson's statistic against the uniform distribution over ``categories``."""
    expected = draws / len(categories)
    return sum((observed.get(c, 0) - expected) ** 2 / expected for c in categories)


def bare_face(gender: str, age: int, i: int) -> Face:
    """A row without images, for tests that only exercise queries."""
    name = f"{gender}_{age}_{i:040x}.jpg"
    return Face(
        filename=name,
        gender=gender,
        age=age,
        age_estimate=float(age),
        p_female=0.9 if gender == "female" else 0.1,
        image_key=f"faces/{name}",
        thumb_key=f"thumbs/{name}",
        image_format="jpeg",
        width=16,
        height=16,
        thumb_size=8,
        native_size=16,
        generator="dcgan",
        generator_checksum="0" * 64,
        estimator="faceapi",
    )


def add_bare(session: Session, spec: dict[tuple[str, int], int]) -> list[Face]:
    """Insert ``n`` bare faces per (gender, age) through add_face, committed."""
    faces = []
    i = 0
    for (gender, age), n in spec.items():
        for _ in range(n):
            i += 1
            faces.append(add_face(session, bare_face(gender, age, i)))
    session.commit()
    return faces


def slots(session: Session, gender: str, age: int) -> list[int]:
    return sorted(
        session.scalars(select(Face.slot).where(Face.gender == gender, Face.age == age)).all()
    )


def counter(session: Session, gender: str, age: int) -> int | None:
    return session.scalar(select(FaceCell.n).where(FaceCell.gender == gender, FaceCell.age == age))


# Uneven cells on purpose: a pick that chose a cell uniformly (not by weight) would fail.
UNEVEN = {("female", 20): 1, ("female", 21): 2, ("female", 30): 5, ("male", 40): 12}


def test_add_face_assigns_dense_slots_per_cell(db_session: Session) -> None:
    add_bare(db_session, {("female", 30): 3, ("male", 30): 2})
    assert slots(db_session, "female", 30) == [0, 1, 2]
    assert slots(db_session, "male", 30) == [0, 1]
    assert counter(db_session, "female", 30) == 3
    assert verify_cells(db_session) == []


def test_remove_face_moves_last_slot_into_hole(db_session: Session) -> None:
    faces = add_bare(db_session, {("female", 30): 5})
    by_slot = {face.slot: face.id for face in faces}
    remove_face(db_session, faces[1])
    db_session.commit()
    assert slots(db_session, "female", 30) == [0, 1, 2, 3]
    assert counter(db_session, "female", 30) == 4
    moved = db_session.scalar(select(Face).where(Face.id == by_slot[4]))
    assert moved is not None and moved.slot == 1
    for face in db_session.scalars(select(Face)).all():
        remove_face(db_session, face)
        db_session.commit()
    assert counter(db_session, "female", 30) == 0
    assert verify_cells(db_session) == []


def test_verify_cells_reports_drift(db_session: Session) -> None:
    add_bare(db_session, {("male", 50): 2})
    db_session.execute(FaceCell.__table__.update().values(n=5))
    db_session.commit()
    (problem,) = verify_cells(db_session)
    assert "male 50" in problem and "counter says 5" in problem


def test_pick_is_uniform_over_all_faces(db_session: Session) -> None:
    faces = add_bare(db_session, UNEVEN)
    rng = random.Random(20240601)
    draws = 1200
    seen = Counter(
        face.id for face in (pick_random(db_session, Filters(), rng)[0] for _ in range(draws))
    )
    statistic = chi_square(seen, [f.id for f in faces], draws)
    assert statistic < CHI2_CRITICAL_0_001[len(faces) - 1], (statistic, seen)


def test_pick_is_uniform_within_a_filter(db_session: Session) -> None:
    add_bare(db_session, UNEVEN)
    rng = random.Random(7)
    window = Filters(minimum_age=21, maximum_age=40)  # 2 + 5 + 12 = 19 faces, 3 cells
    draws = 950
    picks = [pick_random(db_session, window, rng)[0] for _ in range(draws)]
    assert all(21 <= face.age <= 40 for face in picks)
    ids = db_session.scalars(select(Face.id).where(Face.age.between(21, 40))).all()
    statistic = chi_square(Counter(f.id for f in picks), list(ids), draws)
    assert statistic < CHI2_CRITICAL_0_001[len(ids) - 1]


def test_draw_positions_is_uniform_without_a_database() -> None:
    cells = [CellCount("female", 20, 1), CellCount("female", 33, 3), CellCount("male", 60, 8)]
    rng = random.Random(99)
    draws = 12000
    seen = Counter(draw_positions(rng, cells, 1)[0] for _ in range(draws))
    every = [(c.gender, c.age, s) for c in cells for s in range(c.n)]
    assert set(seen) == set(every)
    assert chi_square(seen, every, draws) < CHI2_CRITICAL_0_001[11]


def test_filters_select_only_matching_faces(db_session: Session) -> None:
    add_bare(db_session, {("female", 33): 2, ("male", 33): 2, ("male", 34): 1, ("male", 70): 1})
    rng = random.Random(1)
    for _ in range(30):
        (face,) = pick_random(db_session, Filters("male", 33, 34), rng)
        assert face.gender == "male" and face.age in (33, 34)
    assert pick_random(db_session, Filters("female", 60, 100), rng) == []
    assert count_matching(db_session, Filters("male", 33, 34)) == 3


def test_count_returns_distinct_faces_and_at_most_what_exists(db_session: Session) -> None:
    add_bare(db_session, {("female", 25): 4, ("male", 25): 3})
    rng = random.Random(3)
    five = pick_random(db_session, Filters(), rng, count=5)
    assert len(five) == 5 and len({f.id for f in five}) == 5
    everything = pick_random(db_session, Filters(), rng, count=50)
    assert len(everything) == 7 and len({f.id for f in everything}) == 7


def test_exclude_is_respected(db_session: Session) -> None:
    faces = add_bare(db_session, {("female", 25): 3})
    rng = random.Random(5)
    excluded = {faces[0].id, faces[1].id}
    for _ in range(10):
        (face,) = pick_random(db_session, Filters(), rng, exclude=excluded)
        assert face.id == faces[2].id
    assert pick_random(db_session, Filters(), rng, exclude=[f.id for f in faces]) == []


def test_pick_retries_when_a_slot_vanished(
    db_session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counts read before a concurrent remove_face point at slots that no longer exist."""
    (only,) = add_bare(db_session, {("male", 45): 1})
    real = cells.all_cells
    calls = []

    def stale_then_real(executor: Session) -> list[CellCount]:
        calls.append(1)
        if len(calls) == 1:
            return [CellCount("male", 45, 1), CellCount("male", 46, 10_000)]
        return real(executor)

    monkeypatch.setattr(cells, "all_cells", stale_then_real)
    assert pick_random(db_session, Filters(), random.Random(0)) == [only]
    assert len(calls) == 2


def test_cached_counts_never_return_a_removed_face(db_session: Session) -> None:
    faces = add_bare(db_session, {("female", 50): 6})
    cache = CellCache(max_age=3600)
    rng = random.Random(4)
    assert pick_random(db_session, Filters(), rng, cache=cache)  # warms the cache
    for face in faces[1:]:
        remove_face(db_session, face)
    db_session.commit()
    for _ in range(20):
        assert pick_random(db_session, Filters(), rng, cache=cache) == [faces[0]]


def test_cached_empty_result_is_rechecked(db_session: Session) -> None:
    cache = CellCache(max_age=3600)
    rng = random.Random(2)
    assert pick_random(db_session, Filters(), rng, cache=cache) == []
    (face,) = add_bare(db_session, {("female", 90): 1})
    assert pick_random(db_session, Filters("female", 85, 95), rng, cache=cache) == [face]


def test_cache_expires(db_session: Session) -> None:
    add_bare(db_session, {("male", 20): 1})
    cache = CellCache(max_age=0)
    assert cache.get(db_session) == [CellCount("male", 20, 1)]
    add_bare(db_session, {("male", 21): 1})
    assert len(cache.get(db_session)) == 2


def count_statements(engine, action: Callable[[], object]) -> list[str]:  # type: ignore[no-untyped-def]
    statements: list[str] = []

    def log(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", log)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", log)
    return statements


def test_cost_does_not_grow_with_catalog_size(app: Flask, db_session: Session) -> None:
    """Same statements for 5 and 400 faces, none sorting or scanning the face table."""
    engine = db.get_engine(app)
    rng = random.Random(11)
    add_bare(db_session, {("female", 30): 5})
    small = count_statements(engine, lambda: pick_random(db_session, Filters(), rng))
    add_bare(db_session, {("male", a): 5 for a in range(20, 100)})
    assert db_session.scalar(select(func.count()).select_from(Face)) == 405
    large = count_statements(engine, lambda: pick_random(db_session, Filters(), rng))
    assert len(small) == len(large) == 2
    for sql in large:
        assert "random" not in sql.lower() and "offset" not in sql.lower()
    assert "face_cell" in large[0] and "face.slot" in large[1]


def test_warm_cache_pick_is_one_indexed_select(app: Flask, db_session: Session) -> None:
    add_bare(db_session, {("male", a): 3 for a in range(20, 60)})
    engine = db.get_engine(app)
    cache = CellCache(max_age=3600)
    rng = random.Random(8)
    with engine.connect() as connection:
        pick_random(connection, Filters(), rng, cache=cache)
        statements = count_statements(
            engine, lambda: pick_random(connection, Filters("male", 33, 34), rng, cache=cache)
        )
    assert len(statements) == 1 and "face.slot" in statements[0]


def test_connection_path_is_uniform_with_a_warm_cache(app: Flask, db_session: Session) -> None:
    """The web's path (Core rows, cached counts) draws as uniformly as the ORM path."""
    faces = add_bare(db_session, UNEVEN)
    cache = CellCache(max_age=3600)
    rng = random.Random(31)
    draws = 1200
    with db.get_engine(app).connect() as connection:
        seen = Counter(
            pick_random(connection, Filters(), rng, cache=cache)[0].id for _ in range(draws)
        )
    assert chi_square(seen, [f.id for f in faces], draws) < CHI2_CRITICAL_0_001[19]


def test_concurrent_add_face_never_shares_a_slot(app: Flask) -> None:
    factory = db.session_factory(app)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            with factory() as session:
                for i in range(8):
                    add_face(session, bare_face("female", 22, offset * 100 + i))
                    session.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with factory() as session:
        assert slots(session, "female", 22) == list(range(32))
        assert counter(session, "female", 22) == 32


def test_record_served_adds_counts_and_keeps_the_latest_time(
    app: Flask, db_session: Session
) -> None:
    faces = add_bare(db_session, {("female", 30): 2})
    early = datetime(2020, 8, 2, 22, 8, 56, tzinfo=UTC)
    late = datetime(2021, 1, 1, tzinfo=UTC)
    engine = db.get_engine(app)
    record_served(engine, {faces[0].id: (2, late)})
    record_served(engine, {faces[0].id: (1, early), faces[1].id: (3, early)})
    db_session.expire_all()
    first, second = (db_session.get(Face, f.id) for f in faces)
    assert (first.times_served, first.last_served) == (3, late)
    assert (second.times_served, second.last_served) == (3, early)
