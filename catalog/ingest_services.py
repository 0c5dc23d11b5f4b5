"""On-demand generation and the ``facecat ingest`` commands, wired to this app.

``ingest`` holds the pipeline and the on-demand engine and states what they need from the
catalog as Protocols (``ingest.ports``, ``ingest.ondemand.ports``); it never imports
``catalog``. This module is where the two meet: it provides the app's ``OnDemand`` engine
(found as ``FaceSupplier``, built on first use, after any fork, loading models only when a
run first needs them, so web processes start without torch) on the SQL catalog of
``catalog.sql.ondemand``, makes ``catalog.web.unmet.generate_on_demand`` the supplier of
unmet filters, and registers ``ingest.services.IngestServices`` for the commands.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask

from catalog.services import find_service, provide_service
from catalog.sql.db import schema_behind_hint
from catalog.sql.ondemand import SqlOndemandCatalog
from catalog.storage import Storage
from catalog.web.avatar import collect_avatars
from catalog.web.unmet import Supplier, generate_on_demand
from ingest.ondemand.ports import FaceSupplier
from ingest.services import IngestServices, register_services

if TYPE_CHECKING:
    from ingest.ondemand.engine import OnDemand


def _make_ondemand(app: Flask) -> OnDemand:
    from ingest.ondemand.engine import OnDemand
    from ingest.ondemand.models import available_without_loading, load_model_set
    from ingest.ondemand.settings import OndemandSettings

    config = app.config
    return OnDemand(
        settings=OndemandSettings.from_config(config),
        catalog=SqlOndemandCatalog.for_app(app),
        storage=find_service(Storage, app),
        models=lambda: load_model_set(config),
        available=available_without_loading,
    )


def init_app(app: Flask) -> None:
    """Provide the app's on-demand engine, make it the supplier of unmet filters, and hand
    the ``facecat ingest`` commands this app's catalog, storage and engine.

    Everything is built lazily: the engine on the first unmet filter, the database engine
    and storage when a command first asks, so creating the app (in every web worker)
    connects to nothing and imports no torch.
    """
    provide_service(app, FaceSupplier, lambda: _make_ondemand(app))
    provide_service(app, Supplier, lambda: generate_on_demand)
    register_services(
        app,
        IngestServices(
            catalog=lambda: SqlOndemandCatalog.for_app(app),
            storage=lambda: find_service(Storage, app),
            ondemand=lambda: find_service(FaceSupplier, app),  # type: ignore[arg-type,return-value]
            schema_problem=lambda: schema_behind_hint(app),
            housekeeping=lambda: collect_avatars(app),
        ),
    )
