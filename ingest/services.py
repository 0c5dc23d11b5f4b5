"""What the ``facecat ingest`` commands get from the app they run in.

The commands (``ingest.cli``, ``ingest.ondemand.cli``) belong to ingest, as every package
owns its command group, but they need the app's database and storage, which are the
catalog's, and ingest may not import ``catalog``. So the catalog registers these
factories on the app when it is created (``catalog.ingest_services.init_app``), and a command
asks for them with ``get_services(app)``: the wiring is catalog → ingest, as the layering
wants, and the commands stay importable (and testable) without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click
from flask import Flask

if TYPE_CHECKING:  # the engine pulls in the pipeline; commands import it only when run
    from ingest.ondemand.engine import OnDemand
    from ingest.ondemand.ports import OndemandCatalog
    from ingest.ports import ObjectStore


@dataclass(frozen=True)
class IngestServices:
    """Factories for the app's catalog rows, object storage and on-demand engine.

    Factories rather than objects: the app is created in every web worker before it
    forks, and nothing may connect to a database or a bucket until a command runs.
    """

    catalog: Callable[[], OndemandCatalog]
    storage: Callable[[], ObjectStore]
    ondemand: Callable[[], OnDemand]
    # What is wrong with the database's schema (not migrated to head), or None.
    schema_problem: Callable[[], str | None] = lambda: None
    # The catalog's own upkeep between ingest runs (keeping caches under their caps).
    housekeeping: Callable[[], object] = lambda: None


def register_services(app: Flask, services: IngestServices) -> None:
    """Give ``app``'s ingest commands their catalog, storage and engine."""
    app.extensions[IngestServices] = services


def get_services(app: Flask) -> IngestServices:
    """The services registered on ``app``; a RuntimeError names the missing wiring."""
    try:
        return app.extensions[IngestServices]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError(
            "no ingest services on this app: create it with app.create_app(), whose "
            "catalog.ingest_services.init_app registers them"
        ) from None


def require_current_schema(app: Flask) -> None:
    """Stop a command before it loads models or schedules runs when the database is not
    migrated: otherwise ``measure-yields`` generates for a minute before its first write
    fails, and the worker logs the same missing-table traceback every interval, forever.
    """
    problem = get_services(app).schema_problem()
    if problem:
        raise click.ClickException(problem)
