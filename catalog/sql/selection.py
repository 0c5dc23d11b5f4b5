"""Catalog queries: insert and remove faces, pick uniformly at random, record serving.

Pure functions over SQLAlchemy (no Flask), shared by the web views, ingest and the CLI.
The random pick never scans or sorts faces: ``FaceCell`` holds the number of faces per
(gender, age) cell and every face has a dense ``slot`` 0..n-1 inside its cell, so a
uniform pick over a filter is

1. read the non-empty ``FaceCell`` rows (at most 2 × 101 rows, whatever the catalog size),
2. draw a position uniformly in 0..total-1 over the cells inside the filter and map it to
   (cell, slot) by cumulative counts,
3. seek the one row with the unique (gender, age, slot) index.

Every face matching the filter owns exactly one position, so the pick is uniform. Steps 1
and 3 are index lookups, so the cost is flat from 10^3 to 10^6 faces (README, "Benchmark").
Web processes keep step 1 in a ``CellCache`` for a second, so a request costs one indexed
SELECT; step 1's counters, their cache and the filter → cells mapping are in ``cells``.
``add_face`` and ``remove_face`` are the only writers of ``slot`` and ``FaceCell.n``.

The readers accept an ORM ``Session`` (and return ``Face`` objects) or a Core
``Connection`` (and return rows with the same attribute names, without the ORM's cost):
the web views use the latter, ingest and the CLI the former.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, or_, select, text, tuple_, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from catalog.sql.cells import (
    CellCache,
    CellCount,
    CellIndex,
    Executor,
    Filters,
    Position,
    matching_cells,
)
from catalog.sql.models import Face, FaceCell, UTCDateTime

logger = logging.getLogger(__name__)

# Rounds of "read counts, draw, seek" before giving up on a racing writer. A round only
# repeats when a drawn slot vanished between steps 1 and 3 (remove_face moved it, or the
# cached counts were old) or hit an excluded face, so 8 rounds are never reached in
# practice.
MAX_ROUNDS = 8

FACE = Face.__table__

# What a served face's JSON needs (not the latent vector, hash or provenance).
SERVE_COLUMNS = [
    FACE.c[name]
    for name in (
        "id",
        "gender",
        "age",
        "slot",
        "p_female",
        "filename",
        "image_key",
        "thumb_key",
        "width",
        "height",
        "date_added",
        "last_served",
        "generator",
        "native_size",
        "truncation",
    )
]
_SEEK_ROW = select(*SERVE_COLUMNS).where(
    FACE.c.gender == bindparam("g"), FACE.c.age == bindparam("a"), FACE.c.slot == bindparam("s")
)
_SEEK_FACE = select(Face).where(
    Face.gender == bindparam("g"), Face.age == bindparam("a"), Face.slot == bindparam("s")
)
# Several positions at once: a row-value IN with an expanding parameter, so the statement
# is compiled once whatever the number of positions. Both databases plan it as one seek
# of the unique (gender, age, slot) index per position (PostgreSQL: a BitmapOr).
_POSITIONS = bindparam("p", expanding=True)
_SEEK_ROWS = select(*SERVE_COLUMNS).where(
    tuple_(FACE.c.gender, FACE.c.age, FACE.c.slot).in_(_POSITIONS)
)
_SEEK_FACES = select(Face).where(tuple_(Face.gender, Face.age, Face.slot).in_(_POSITIONS))
_served_at = bindparam("t", type_=UTCDateTime())
_SERVED_UPDATE = (
    update(FACE)
    .where(FACE.c.id == bindparam("fid"))
    .values(
        times_served=FACE.c.times_served + bindparam("n"),
        # Keep the latest time when processes flush out of order.
        last_served=case(
            (or_(FACE.c.last_served.is_(None), FACE.c.last_served < _served_at), _served_at),
            else_=FACE.c.last_served,
        ),
    )
)


# --- writers ----------------------------------------------------------------------------


def _upsert(session: Session) -> Callable[..., Any]:
    """The dialect's INSERT that supports ON CONFLICT … DO UPDATE … RETURNING."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - config validation only admits these two
        raise NotImplementedError(f"no upsert for {dialect}")
    return insert


def add_face(session: Session, face: Face) -> Face:
    """Give ``face`` the next slot of its (gender, age) cell and add it; the caller commits.

    The counter is bumped with one ``INSERT … ON CONFLICT DO UPDATE SET n = n + 1
    RETURNING n``: atomic on both databases, so concurrent ingests never share a slot.
    On PostgreSQL the statement row-locks the cell until commit, which serialises writers
    of the same cell only (readers never wait); SQLite serialises all writers anyway.
    """
    face.age = int(face.age)
    insert = _upsert(session)
    stmt = (
        insert(FaceCell)
        .values(gender=face.gender, age=face.age, n=1)
        .on_conflict_do_update(
            index_elements=[FaceCell.gender, FaceCell.age], set_={"n": FaceCell.n + 1}
        )
        .returning(FaceCell.n)
    )
    n = session.execute(stmt).scalar_one()
    face.slot = n - 1
    session.add(face)
    session.flush()
    return face


def remove_face(session: Session, face: Face) -> None:
    """Delete ``face`` and keep its cell's slots dense; the caller commits.

    The cell's last face moves into the hole, so slots stay 0..n-1. The counter UPDATE
    comes first: it locks the cell row (PostgreSQL), making concurrent add/remove in the
    cell wait, and both writers take that lock first, so they cannot deadlock.
    """
    gender, age, hole = face.gender, int(face.age), face.slot
    last = session.execute(
        update(FaceCell)
        .where(FaceCell.gender == gender, FaceCell.age == age)
        .values(n=FaceCell.n - 1)
        .returning(FaceCell.n)
    ).scalar_one()
    session.delete(face)
    session.flush()
    if hole != last:
        session.execute(
            update(Face)
            .where(Face.gender == gender, Face.age == age, Face.slot == last)
            .values(slot=hole)
        )


def record_served(engine: Engine, served: Mapping[int, tuple[int, datetime]]) -> None:
    """Add ``n`` to ``times_served`` and raise ``last_served`` to ``t`` for each face id.

    ``served`` maps face id → (n, t). Why this shape: one UPDATE per face, no row read
    FOR UPDATE, in its own short transaction that commits at once, so row locks live for
    one statement and requests serving different faces never wait for each other. Rows
    are updated in ascending id order (psycopg2 sends them in batches of 100 per round
    trip), so two processes flushing overlapping sets lock in the same order and cannot
    deadlock. On PostgreSQL the commit skips the WAL fsync (``synchronous_commit = off``):
    a crash may lose the last milliseconds of counters, never consistency.
    ``catalog.sql.serving.ServedRecorder`` calls this once a second with everything a web
    process served, rather than once per request.
    """
    if not served:
        return
    params = [{"fid": fid, "n": n, "t": t} for fid, (n, t) in sorted(served.items())]
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SET LOCAL synchronous_commit = off"))
        connection.execute(_SERVED_UPDATE, params)


# --- readers ----------------------------------------------------------------------------


def draw_positions(
    rng: random.Random,
    cells: CellIndex | Sequence[CellCount],
    count: int,
    tried: set[Position] = frozenset(),  # type: ignore[assignment]
) -> list[Position]:
    """Up to ``count`` distinct positions, uniform over the cells' faces, none in ``tried``.

    Without ``tried`` this is ``rng.sample`` over 0..total-1: O(count), not O(total). With
    ``tried`` (a retry round) it draws by rejection, and enumerates the few positions left
    only when fewer than ``count`` remain, which happens only for catalogs that small.
    """
    index = cells if isinstance(cells, CellIndex) else CellIndex.build(cells)
    total = index.total
    if total <= 0 or count <= 0:
        return []
    position = index.position
    if not tried:
        if count == 1:
            return [position(rng.randrange(total))]
        return [position(i) for i in rng.sample(range(total), min(count, total))]
    if total - len(tried) <= count:
        remaining = [p for p in map(position, range(total)) if p not in tried]
        rng.shuffle(remaining)
        return remaining[:count]
    chosen: dict[Position, None] = {}
    for _ in range(count * 20 + 100):
        candidate = position(rng.randrange(total))
        if candidate not in tried:
            chosen.setdefault(candidate)
            if len(chosen) == count:
                break
    return list(chosen)


def _faces_at(executor: Executor, positions: Sequence[Position]) -> dict[Position, Any]:
    """The faces stored at ``positions``, each found through the unique slot index."""
    orm = isinstance(executor, Session)
    if len(positions) == 1:
        gender, age, slot = positions[0]
        params: dict[str, Any] = {"g": gender, "a": age, "s": slot}
        statement = _SEEK_FACE if orm else _SEEK_ROW
    else:
        params = {"p": list(positions)}
        statement = _SEEK_FACES if orm else _SEEK_ROWS
    if orm:
        rows: Sequence[Any] = executor.scalars(statement, params).all()
    else:
        rows = executor.execute(statement, params).all()
    return {(row.gender, int(row.age), row.slot): row for row in rows}


def pick_random(
    executor: Executor,
    filters: Filters,
    rng: random.Random,
    count: int = 1,
    exclude: Iterable[int] = (),
    cache: CellCache | None = None,
) -> list[Any]:
    """Up to ``count`` distinct faces drawn uniformly from those matching ``filters``.

    Returns ``Face`` objects for a Session, rows with the same attribute names for a
    Connection; fewer than ``count`` only when fewer match (``[]`` when none do). Faces
    whose id is in ``exclude`` are never returned. Costs one read of the counters (none
    with a warm ``cache``) and one seek by the unique slot index, whatever the catalog
    size; a round repeats only when the counts were stale and a drawn slot was missing.
    """
    excluded = set(exclude)
    chosen: dict[int, Any] = {}
    tried: set[Position] = set()
    fresh = cache is None
    for _ in range(MAX_ROUNDS):
        need = count - len(chosen)
        if need <= 0:
            break
        if cache is not None:
            cells: CellIndex | list[CellCount] = cache.index(executor, filters, fresh)
        else:
            cells = matching_cells(executor, filters)
        positions = draw_positions(rng, cells, need, tried)
        if not positions:
            if fresh:
                break
            fresh = True  # cached counts say nothing (more) matches: ask the database
            continue
        tried.update(positions)
        found = _faces_at(executor, positions)
        if len(found) < len(positions):
            fresh = True  # a slot vanished: the counts were stale
        for pos in positions:  # in draw order, so the results come shuffled
            face = found.get(pos)
            if face is None or face.id in excluded or face.id in chosen:
                continue
            chosen[face.id] = face
            if len(chosen) == count:
                break
    return list(chosen.values())


def get_face(executor: Executor, face_id: int) -> Any:
    """One face by id (a ``Face`` for a Session, a row for a Connection), or None."""
    if isinstance(executor, Session):
        return executor.get(Face, face_id)
    return executor.execute(select(*SERVE_COLUMNS).where(FACE.c.id == face_id)).first()
