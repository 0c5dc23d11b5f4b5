"""On-demand generation wired into this app: its SQL side, its engine, its supplier.

``ingest.ondemand`` holds the strategy (plans, single flight, generation through the
ingest pipeline) and states what it needs from the catalog as
``ingest.ondemand.ports.OndemandCatalog``. This module is the catalog's side:

* ``SqlOndemandCatalog``: that port on the database (job claims and the backfill queue in
  ``catalog.flight``, the yield table in ``catalog.yields``, stored faces by filter), on
  top of the pipeline's ``SqlIngestCatalog``;
* ``get_ondemand``: the app's ``OnDemand`` engine, built on first use (after any fork),
  loading the models only when a run first needs them, so web processes start without
  torch;
* ``supply``: the supplier ``catalog.fallback`` calls for an unmet filter; the engine's
  ``Unreachable`` becomes the 404 ``no_match`` with nearby filters, and generation is
  charged to the caller's budget through ``catalog.limits``;
* ``init_app``: installs the supplier, and gives the ``facecat ingest`` commands (which
  live in ``ingest.cli`` and may not import ``catalog``) this app's catalog, storage and
  engine as ``ingest.services.IngestServices``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog import flight, yields
from catalog.admission import SqlIngestCatalog
from catalog.db import schema_behind_hint, session_factory
from catalog.errors import ApiError
from catalog.extensions import lazy_extension
from catalog.fallback import register_supplier
from catalog.models import Face, FaceCell
from catalog.selection import Filters
from catalog.storage import get_storage
from ingest.ondemand.ports import Target
from ingest.services import IngestServices, register_services

if TYPE_CHECKING:
    from ingest.ondemand.engine import OnDemand
    from ingest.ondemand.yields import Counts, YieldTable

logger = logging.getLogger(__name__)

_EXTENSION = "facecat.ondemand"


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

    # --- single flight (catalog.flight) -----------------------------------------------

    def claim(self, key: str, owner: str, ttl: float) -> bool:
        return flight.claim(self.session_factory, key, owner, ttl)

    def mark_started(self, key: str, owner: str, strategy: str) -> None:
        flight.mark_started(self.session_factory, key, owner, strategy)

    def finish(self, key: str, owner: str, *, face_id: int | None, strategy: str | None) -> None:
        flight.finish(self.session_factory, key, owner, face_id=face_id, strategy=strategy)

    def wait(self, key: str, deadline: float, *, clock: Callable[[], float]) -> None:
        flight.wait(self.session_factory, key, deadline, clock=clock)

    # --- backfill queue (catalog.flight) ----------------------------------------------

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

    # --- yields (catalog.yields) ------------------------------------------------------

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


def get_ondemand(app: Flask | None = None) -> OnDemand:
    """The app's ``OnDemand`` engine, created on first use (after any fork)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    return lazy_extension(app, _EXTENSION, lambda: _make_ondemand(app))


def _make_ondemand(app: Flask) -> OnDemand:
    from ingest.ondemand.engine import (
        OnDemand,
        OndemandSettings,
        available_without_loading,
        load_model_set,
    )

    config = app.config
    return OnDemand(
        settings=OndemandSettings.from_config(config),
        catalog=SqlOndemandCatalog.for_app(app),
        storage=get_storage(app),
        models=lambda: load_model_set(config),
        available=available_without_loading,
    )


def _charge() -> None:
    """One generation from the caller's budget (raises the 429 ``ApiError`` when spent)."""
    from catalog.limits import charge_generation

    charge_generation()


def supply(filters: Filters) -> Face | None:
    """The supplier ``catalog.fallback`` calls: a generated face, None, or a 404 at once.

    :raise ApiError: 404 ``no_match`` with ``reason: unreachable`` and ``nearby``
        filters when no strategy is likely to reach ``filters`` within the budget.
    """
    from ingest.ondemand.engine import Unreachable

    target = Target(filters.gender, filters.minimum_age, filters.maximum_age)
    try:
        return get_ondemand().supply(target, charge=_charge)  # type: ignore[return-value]
    except Unreachable as exc:
        raise ApiError(
            404,
            "no_match",
            exc.detail,
            filters=filters.as_dict(),
            reason="unreachable",
            nearby=exc.nearby,
        ) from None


def init_app(app: Flask) -> None:
    """Install on-demand generation as the app's supplier for unmet filters, and hand the
    ``facecat ingest`` commands this app's catalog, storage and engine.

    Everything is built lazily: the engine on the first unmet filter, the database engine
    and storage when a command first asks, so creating the app (in every web worker)
    connects to nothing and imports no torch.
    """
    register_supplier(app, supply)
    register_services(
        app,
        IngestServices(
            catalog=lambda: SqlOndemandCatalog.for_app(app),
            storage=lambda: get_storage(app),
            ondemand=lambda: get_ondemand(app),
            schema_problem=lambda: schema_behind_hint(app),
        ),
    )
