"""What on-demand generation is asked for, and what it needs from the catalog.

The engine (``ingest.ondemand.engine``) takes a ``Target``, a plain value, and talks to
the catalog only through ``OndemandCatalog``: the pipeline's ``IngestCatalog`` plus the
rows on-demand keeps (single-flight claims, the backfill queue, the yield table) and
lookups of stored faces. ``catalog.sql.ondemand.SqlOndemandCatalog`` implements it on the
database; ``catalog.ingest_services`` builds the engine per app, and
``catalog.web.unmet`` turns its ``Unreachable`` into the 404 the API answers. ingest
never imports ``catalog``.

Light on purpose (no numpy, torch or SQLAlchemy): web processes import it at start-up.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ingest.ports import IngestCatalog

if TYPE_CHECKING:
    from ingest.ondemand.yields import Counts, YieldTable

# Backfill request states, and why a filter was queued. The engine sets them; the catalog
# stores them in ``backfill_request`` rows.
PENDING, FULFILLED, UNREACHABLE = "pending", "done", "unreachable"
NOT_FOUND, SLOW = "not_found", "slow"


def filter_key(gender: str | None, minimum_age: int, maximum_age: int) -> str:
    """The normalised filter: ``female:40-49``, ``any:0-100``."""
    return f"{gender or 'any'}:{int(minimum_age)}-{int(maximum_age)}"


@dataclass(frozen=True)
class Target:
    """Faces wanted: a gender (None = either) and an inclusive age window (0..100)."""

    gender: str | None = None
    minimum_age: int = 0
    maximum_age: int = 100

    @property
    def key(self) -> str:
        """The normalised filter, the key of its claim and backfill rows."""
        return filter_key(self.gender, self.minimum_age, self.maximum_age)


class StoredFace(Protocol):
    """A face the catalog holds; the engine needs only its id (the caller gets the rest)."""

    @property
    def id(self) -> int: ...


class JobBoard(Protocol):
    """Single flight across processes: one generation run per filter at a time."""

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        """Whether ``owner`` now holds the run for ``key`` (False: another run is going).

        A claim whose run finished, or that is older than ``ttl`` seconds (its owner
        died), may be taken over; exactly one claimant wins.
        """
        ...

    def mark_started(self, key: str, owner: str, strategy: str) -> None:
        """Count a generation run for ``key`` (the claimant found nothing stored)."""
        ...

    def finish(self, key: str, owner: str, *, face_id: int | None, strategy: str | None) -> None:
        """Record the outcome of ``owner``'s run, if it still holds the claim."""
        ...

    def wait(self, key: str, deadline: float, *, clock: Callable[[], float]) -> None:
        """Return once the run for ``key`` finished, or when ``clock()`` reaches ``deadline``."""
        ...


class BackfillQueue(Protocol):
    """Filters users asked for and did not get at once, for the worker to fill later."""

    def request_backfill(self, target: Target, reason: str) -> None:
        """Count one more ask and (re)queue it as ``PENDING``; never raises (best effort)."""
        ...

    def pending_backfills(self, limit: int) -> list[Target]:
        """Up to ``limit`` pending filters, the most requested first."""
        ...

    def settle_backfill(self, key: str, *, status: str, admitted: int) -> None:
        """Record one attempt at the filter ``key``: its new status, faces admitted."""
        ...


class YieldStore(Protocol):
    """The measured yields per (strategy, gender, decade band) that planning reads."""

    def load_yields(self) -> YieldTable:
        """Every measured row."""
        ...

    def record_yields(
        self,
        strategy: str,
        updates: Mapping[tuple[str, tuple[int, int]], Counts],
        *,
        reset: bool = False,
    ) -> None:
        """Add ``updates`` (per (gender, band)) to the rows, concurrent runs adding up;
        with ``reset`` the strategy's rows are deleted first, in the same transaction."""
        ...


class FaceSupplier(Protocol):
    """On-demand generation as the catalog sees it (``ingest.ondemand.engine.OnDemand``),
    and the type the app finds the engine by without importing torch."""

    def supply(
        self, target: Target, *, charge: Callable[[], None] | None = None
    ) -> StoredFace | None:
        """A committed face matching ``target``, or None when the budget ran out."""


class OndemandCatalog(IngestCatalog, JobBoard, BackfillQueue, YieldStore, Protocol):
    """Everything on-demand generation and its commands use of the catalog."""

    def cell_counts(self) -> list[tuple[str, int, int]]:
        """``(gender, age, faces)`` of every non-empty (gender, age) cell."""
        ...

    def stored(self, target: Target, run_id: int | None = None) -> StoredFace | None:
        """A stored face matching ``target``: a random one, or run ``run_id``'s first."""
        ...
