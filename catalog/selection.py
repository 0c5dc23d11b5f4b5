"""Catalog queries: insert and remove faces, pick uniformly at random, record serving.

Pure functions over a SQLAlchemy ``Session`` (no Flask), shared by the web views, ingest
and the CLI. The random pick never scans or sorts faces: ``FaceCell`` holds the number
of faces per (gender, age) cell and every face has a dense ``slot`` 0..n-1 inside its
cell, so a uniform pick over a filter is

1. read the matching ``FaceCell`` rows (at most 2 × 101 rows, whatever the catalog size),
2. draw a position uniformly in 0..total-1 and map it to (cell, slot) by cumulative counts,
3. seek the one row with the unique (gender, age, slot) index.

Every face matching the filter owns exactly one position, so the pick is uniform. Steps 1
and 3 are index lookups, so the cost is flat from 10^3 to 10^6 faces (README, "Benchmark").
``add_face`` and ``remove_face`` are the only writers of ``slot`` and ``FaceCell.n``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from catalog.models import Face, FaceCell, utcnow

logger = logging.getLogger(__name__)

MIN_AGE, MAX_AGE = 0, 100
# Rounds of "re-read counts, draw, seek" before giving up on a racing writer. A round
# only repeats when a drawn slot vanished between steps 1 and 3 (remove_face moved it)
# or hit an excluded face, so 8 rounds are never reached in practice.
MAX_ROUNDS = 8

Position = tuple[str, int, int]  # (gender, age, slot)


@dataclass(frozen=True)
class Filters:
    """What a client asked for: gender (None = any) and an inclusive age window."""

    gender: str | None = None
    minimum_age: int = MIN_AGE
    maximum_age: int = MAX_AGE

    def as_dict(self) -> dict[str, str | int | None]:
        """The filters as the 404 ``no_match`` body reports them."""
        return {
            "gender": self.gender,
            "minimum_age": self.minimum_age,
            "maximum_age": self.maximum_age,
        }


@dataclass(frozen=True)
class CellCount:
    """Number of faces of one gender at one age."""

    gender: str
    age: int
    n: int


# --- writers ----------------------------------------------------------------------------


def _upsert(session: Session):  # type: ignore[no-untyped-def]
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


def record_served(session: Session, faces: Sequence[Face], when: datetime | None = None) -> None:
    """Set ``last_served`` and bump ``times_served`` for ``faces``, then commit.

    Why this shape: one ``UPDATE … SET times_served = times_served + 1`` per request, in
    its own short transaction that commits at once. No row is read FOR UPDATE, so two
    requests serving the same face wait for each other only for that single statement,
    and requests serving different faces never wait. A batched in-memory flush would save
    the write but lose counts on a crash, go stale across worker processes, and make the
    "previous serving time" the JSON reports wrong for up to a flush interval.

    On PostgreSQL the commit skips the WAL fsync (``synchronous_commit = off``): a crash
    may lose the last few milliseconds of counters, never consistency, and a request no
    longer waits on the disk. Ids are updated in ascending order so concurrent
    multi-face updates lock rows in the same order. Counting is best effort: a database
    error here is logged and swallowed, because failing to count must not fail a request
    whose face was already chosen.

    The caller reads ``face.last_served`` *before* calling this (the JSON shows the
    previous serving time); the ORM objects are not refreshed.
    """
    ids = sorted({face.id for face in faces})
    if not ids:
        return
    when = when or utcnow()
    try:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SET LOCAL synchronous_commit = off"))
        session.execute(
            update(Face)
            .where(Face.id.in_(ids))
            .values(last_served=when, times_served=Face.times_served + 1)
            .execution_options(synchronize_session=False)
        )
        session.commit()
    except DBAPIError:
        session.rollback()
        logger.warning("could not record serving of faces %s", ids, exc_info=True)


# --- readers ----------------------------------------------------------------------------


def matching_cells(session: Session, filters: Filters) -> list[CellCount]:
    """Non-empty cells inside the filter, in a fixed order (so a seeded rng replays)."""
    query = select(FaceCell.gender, FaceCell.age, FaceCell.n).where(
        FaceCell.n > 0,
        FaceCell.age >= filters.minimum_age,
        FaceCell.age <= filters.maximum_age,
    )
    if filters.gender is not None:
        query = query.where(FaceCell.gender == filters.gender)
    rows = session.execute(query.order_by(FaceCell.gender, FaceCell.age)).all()
    return [CellCount(gender, int(age), int(n)) for gender, age, n in rows]


def count_matching(session: Session, filters: Filters) -> int:
    """How many faces match ``filters`` (from the counters; no scan)."""
    return sum(cell.n for cell in matching_cells(session, filters))


def all_cells(session: Session) -> list[CellCount]:
    """Every non-empty cell, for /stats and ``facecat catalog stats``."""
    return matching_cells(session, Filters())


def _position_mapper(cells: Sequence[CellCount]):  # type: ignore[no-untyped-def]
    """A function from an index in 0..total-1 to its (gender, age, slot) position."""
    bounds = list(itertools.accumulate(cell.n for cell in cells))

    def position(index: int) -> Position:
        i = bisect.bisect_right(bounds, index)
        start = bounds[i - 1] if i else 0
        return (cells[i].gender, cells[i].age, index - start)

    return position


def draw_positions(
    rng: random.Random,
    cells: Sequence[CellCount],
    count: int,
    tried: set[Position] = frozenset(),  # type: ignore[assignment]
) -> list[Position]:
    """Up to ``count`` distinct positions, uniform over the cells' faces, none in ``tried``.

    Without ``tried`` this is ``rng.sample`` over 0..total-1: O(count), not O(total). With
    ``tried`` (a retry round) it draws by rejection, and enumerates the few positions left
    only when fewer than ``count`` remain, which happens only for catalogs that small.
    """
    total = sum(cell.n for cell in cells)
    if total <= 0 or count <= 0:
        return []
    position = _position_mapper(cells)
    if not tried:
        indices = rng.sample(range(total), min(count, total))
        return [position(i) for i in indices]
    if total - len(tried) <= count:
        remaining = [position(i) for i in range(total)]
        remaining = [p for p in remaining if p not in tried]
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


def _faces_at(session: Session, positions: Sequence[Position]) -> dict[Position, Face]:
    """The faces stored at ``positions``, each found through the unique slot index."""
    if not positions:
        return {}
    # An OR of equalities on the full unique key plans as one index seek per position on
    # both databases (PostgreSQL: a BitmapOr of index scans; SQLite: the OR optimisation).
    condition = or_(
        *(
            and_(Face.gender == gender, Face.age == age, Face.slot == slot)
            for gender, age, slot in positions
        )
    )
    faces = session.scalars(select(Face).where(condition)).all()
    return {(face.gender, int(face.age), face.slot): face for face in faces}


def pick_random(
    session: Session,
    filters: Filters,
    rng: random.Random,
    count: int = 1,
    exclude: Iterable[int] = (),
) -> list[Face]:
    """Up to ``count`` distinct faces drawn uniformly from those matching ``filters``.

    Returns fewer than ``count`` only when fewer match (``[]`` when none do). Faces whose
    id is in ``exclude`` are never returned. Costs two indexed queries per round whatever
    the catalog size; a round repeats only when a concurrent ``remove_face`` moved a slot
    between reading the counts and seeking the row.
    """
    excluded = set(exclude)
    chosen: dict[int, Face] = {}
    tried: set[Position] = set()
    for _ in range(MAX_ROUNDS):
        need = count - len(chosen)
        if need <= 0:
            break
        cells = matching_cells(session, filters)
        positions = draw_positions(rng, cells, need, tried)
        if not positions:
            break
        tried.update(positions)
        found = _faces_at(session, positions)
        for pos in positions:  # draw order, so the results are shuffled too
            face = found.get(pos)
            if face is None or face.id in excluded or face.id in chosen:
                continue
            chosen[face.id] = face
            if len(chosen) == count:
                break
    return list(chosen.values())


def get_face(session: Session, face_id: int) -> Face | None:
    """One face by id, or None."""
    return session.get(Face, face_id)


def verify_cells(session: Session) -> list[str]:
    """Inconsistencies between ``FaceCell`` counters and face slots (empty list: healthy).

    A full scan, for ``facecat catalog doctor``; serving never calls it.
    """
    actual = {
        (gender, int(age)): (int(n), int(max_slot))
        for gender, age, n, max_slot in session.execute(
            select(Face.gender, Face.age, func.count(), func.max(Face.slot)).group_by(
                Face.gender, Face.age
            )
        )
    }
    counters = {
        (gender, int(age)): int(n)
        for gender, age, n in session.execute(select(FaceCell.gender, FaceCell.age, FaceCell.n))
    }
    problems: list[str] = []
    for key in sorted(set(actual) | set(counters)):
        faces, max_slot = actual.get(key, (0, -1))
        n = counters.get(key, 0)
        if faces != n or max_slot != n - 1:
            problems.append(
                f"cell {key[0]} {key[1]}: counter says {n}, found {faces} faces "
                f"with slots up to {max_slot}"
            )
    return problems
