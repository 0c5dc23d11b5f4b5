"""``ingest.ondemand.ports.OndemandCatalog`` on the catalog's database.

On top of the pipeline's ``SqlIngestCatalog``: stored faces by filter, the job claims and
the backfill queue of ``catalog.sql.flight``, the yield table of ``catalog.sql.yields``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog.sql import flight, yields
from catalog.sql.admission import SqlIngestCatalog
from catalog.sql.db import session_factory
from catalog.sql.models import Face, FaceCell
from ingest.ondemand.ports import Target

if TYPE_CHECKING:
    from ingest.ondemand.yields import Counts, YieldTable


def target_condition(target: Target) -> list[Any]:
    """SQL conditions selecting faces that match ``target``."""
    conditions = [Face.age >= target.minimum_age, Face.age <= target.maximum_age]
    if target.gender is not None:
        conditions.append(Face.gender == target.gender)
    return conditions


class SqlOndemandCatalog(SqlIngestCatalog):
    """``ingest.ondemand.ports.OndemandCatalog`` on the catalog's database."""

    def __init__(
        self, session_factory: sessionmaker[Session], stale_run_seconds: float = 900.0
    ) -> None:
        super().__init__(session_factory, stale_run_seconds)
        self._rng = random.SystemRandom()

    @classmethod
    def for_app(cls, app: Flask) -> SqlOndemandCatalog:
        """The catalog of ``app``'s database, with its settings."""
        return cls(session_factory(app), float(app.config["INGEST_STALE_RUN_SECONDS"]))

    # --- stored faces -----------------------------------------------------------------

    def cell_counts(self) -> list[tuple[str, int, int]]:
        """``(gender, age, n)`` of every non-empty ``face_cell`` row."""
        with self.session_factory() as session:
            return [
                (gender, int(age), int(n))
                for gender, age, n in session.execute(
                    select(FaceCell.gender, FaceCell.age, FaceCell.n).where(FaceCell.n > 0)
                )
            ]

    def stored(self, target: Target, run_id: int | None = None) -> Face | None:
        """A random stored face matching ``target`` (run ``run_id``'s first, if given).

        Reads at most 64 ids: it runs only right after a run admitted a handful.
        """
        with self.session_factory() as session:
            query = select(Face.id).where(*target_condition(target))
            if run_id is not None:
                query = query.where(Face.ingest_run_id == run_id).order_by(Face.id)
            ids = list(session.scalars(query.limit(64)))
            if not ids:
                return None
            return session.get(Face, ids[0] if run_id is not None else self._rng.choice(ids))

    # --- single flight (catalog.sql.flight) -----------------------------------------------

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        return flight.claim(self.session_factory, key, owner, ttl)

    def mark_started(self, key: str, owner: str, strategy: str) -> None:
        flight.mark_started(self.session_factory, key, owner, strategy)

    def finish(self, key: str, owner: str, *, face_id: int | None, strategy: str | None) -> None:
        flight.finish(self.session_factory, key, owner, face_id=face_id, strategy=strategy)

    def wait(self, key: str, deadline: float, *, clock: Callable[[], float]) -> None:
        flight.wait(self.session_factory, key, deadline, clock=clock)

    # --- backfill queue (catalog.sql.flight) ----------------------------------------------

    def request_backfill(self, target: Target, reason: str) -> None:
        flight.request_backfill(
            self.session_factory, target.gender, target.minimum_age, target.maximum_age, reason
        )

    def pending_backfills(self, limit: int) -> list[Target]:
        return [
            Target(request.gender, request.minimum_age, request.maximum_age)
            for request in flight.pending_backfills(self.session_factory, limit)
        ]

    def settle_backfill(self, key: str, *, status: str, admitted: int) -> None:
        flight.settle_backfill(self.session_factory, key, status=status, admitted=admitted)

    # --- yields (catalog.sql.yields) ------------------------------------------------------

    def load_yields(self) -> YieldTable:
        with self.session_factory() as session:
            return yields.load_yields(session)

    def record_yields(
        self,
        strategy: str,
        updates: Mapping[tuple[str, tuple[int, int]], Counts],
        *,
        reset: bool = False,
    ) -> None:
        with self.session_factory() as session:
            if reset:
                yields.reset_yields(session, strategy)
            yields.record_yields(session, strategy, updates)
            session.commit()
