"""The per-cell counters the random pick reads: one (gender, age) cell at a time.

``FaceCell`` holds how many faces each (gender, age) cell has; this module reads those
counts (``all_cells``), narrows them to a client's ``Filters`` (``select_cells``), maps a
position over the chosen cells to (gender, age, slot) (``CellIndex``), keeps one process's
counts warm for a second (``CellCache``), and checks the counters against the faces
(``verify_cells``). It is separate from ``selection`` because these are the bookkeeping a
pick, ``/stats``, avatars and ``catalog doctor`` all read, while ``selection`` holds the
pick itself and the writers that keep the counters and slots dense; ``selection`` imports
this module, never the other way.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from analysis.vocabulary import BANDS, GENDERS, MAX_AGE, MIN_AGE, band_of
from catalog.sql.models import Face, FaceCell

Position = tuple[str, int, int]  # (gender, age, slot)
Executor = Session | Connection

CELL = FaceCell.__table__

# Built once: constructing a statement costs more than running it on a warm connection.
_CELLS = (
    select(CELL.c.gender, CELL.c.age, CELL.c.n)
    .where(CELL.c.n > 0)
    .order_by(CELL.c.gender, CELL.c.age)
)


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


@dataclass(frozen=True)
class CellIndex:
    """The cells inside one filter with their cumulative counts: index → position."""

    cells: tuple[CellCount, ...]
    bounds: tuple[int, ...]  # bounds[i] = faces in cells[0..i]

    @classmethod
    def build(cls, cells: Iterable[CellCount]) -> CellIndex:
        """Index ``cells`` (in their given order)."""
        cells = tuple(cells)
        return cls(cells, tuple(itertools.accumulate(cell.n for cell in cells)))

    @property
    def total(self) -> int:
        """Faces in all the cells."""
        return self.bounds[-1] if self.bounds else 0

    def position(self, index: int) -> Position:
        """The (gender, age, slot) of the ``index``-th face, 0 ≤ index < total."""
        i = bisect.bisect_right(self.bounds, index)
        start = self.bounds[i - 1] if i else 0
        return (self.cells[i].gender, self.cells[i].age, index - start)


def all_cells(executor: Executor) -> list[CellCount]:
    """Every non-empty cell (≤ 202 rows), in a fixed order (so a seeded rng replays)."""
    return [CellCount(g, int(a), int(n)) for g, a, n in executor.execute(_CELLS)]


def counts_by_band(cells: Iterable[CellCount]) -> dict[tuple[str, str], int]:
    """Faces per (gender, band label), every gender × band present, zero when empty: the
    one count /stats, /metrics and curation read."""
    counts = {(gender, band.label): 0 for gender in GENDERS for band in BANDS}
    for cell in cells:
        counts[(cell.gender, band_of(cell.age).label)] += cell.n
    return counts


def select_cells(cells: Iterable[CellCount], filters: Filters) -> list[CellCount]:
    """The cells inside ``filters``."""
    return [
        cell
        for cell in cells
        if filters.minimum_age <= cell.age <= filters.maximum_age
        and (filters.gender is None or cell.gender == filters.gender)
    ]


def matching_cells(executor: Executor, filters: Filters) -> list[CellCount]:
    """Non-empty cells inside the filter, read now from the database."""
    return select_cells(all_cells(executor), filters)


def count_matching(executor: Executor, filters: Filters) -> int:
    """How many faces match ``filters`` (from the counters; no scan)."""
    return sum(cell.n for cell in matching_cells(executor, filters))


class CellCache:
    """The cell counts of one process, reused for ``max_age`` seconds.

    Reading ≤ 202 counter rows is cheap, but it is half the database work of a pick, and
    a web process serving hundreds of requests a second needs it once a second. Old
    counts cannot produce a wrong face: a slot that no longer exists is a miss, and
    ``pick_random`` then reads fresh counts. They can only keep faces added since the
    read from being picked, for at most ``max_age``; and an empty result is never
    trusted, so a face made on demand is found at once. The per-filter ``CellIndex`` is
    kept too, so a warm pick does no Python work proportional to the number of cells.
    """

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._cells: list[CellCount] | None = None
        self._indexes: dict[Filters, CellIndex] = {}
        self._read_at = 0.0
        self._lock = threading.Lock()

    def get(self, executor: Executor, fresh: bool = False) -> list[CellCount]:
        """The cached counts, or fresh ones if asked, expired or never read."""
        cells, read_at = self._cells, self._read_at
        if not fresh and cells is not None and time.monotonic() - read_at < self.max_age:
            return cells
        cells = all_cells(executor)
        with self._lock:
            self._cells, self._indexes, self._read_at = cells, {}, time.monotonic()
        return cells

    def index(self, executor: Executor, filters: Filters, fresh: bool = False) -> CellIndex:
        """The cells inside ``filters``, indexed (from the cached counts unless ``fresh``)."""
        cells = self.get(executor, fresh)
        indexes = self._indexes
        index = indexes.get(filters)
        if index is None or fresh:
            index = CellIndex.build(select_cells(cells, filters))
            if self._cells is cells:  # not replaced meanwhile by another thread
                indexes[filters] = index
        return index

    def invalidate(self) -> None:
        """Forget the counts (the next pick reads them)."""
        with self._lock:
            self._cells, self._indexes = None, {}


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
