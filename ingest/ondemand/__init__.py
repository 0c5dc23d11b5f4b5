"""On-demand generation for unmet filters (issue 5), wired into ``catalog.fallback``.

``init_app`` registers the supplier; the engine (``OnDemand``) is built per app on first
use and loads the models only when a run first needs them, so the web process starts
without torch. Modules: ``yields`` (measured yields and the strategy choice), ``flight``
(single flight and backfill rows), ``strategies`` (generator adapters), ``engine``,
``cli`` (``facecat ingest measure-yields`` and ``facecat ingest backfill``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask, current_app

from catalog.errors import ApiError
from catalog.fallback import register_supplier
from catalog.models import Face
from catalog.selection import Filters

logger = logging.getLogger(__name__)

_EXTENSION = "facecat.ondemand"
_create_lock = threading.Lock()


def get_ondemand(app: Flask | None = None) -> Any:
    """The app's ``OnDemand`` engine, created on first use (after any fork)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    engine = app.extensions.get(_EXTENSION)
    if engine is None:
        with _create_lock:
            engine = app.extensions.get(_EXTENSION)
            if engine is None:
                from catalog.db import session_factory
                from catalog.storage import get_storage
                from ingest.ondemand.engine import (
                    OnDemand,
                    OndemandSettings,
                    available_without_loading,
                    load_model_set,
                )

                config = app.config
                engine = OnDemand(
                    settings=OndemandSettings.from_config(config),
                    session_factory=session_factory(app),
                    storage=get_storage(app),
                    models=lambda: load_model_set(config),
                    available=available_without_loading,
                )
                app.extensions[_EXTENSION] = engine
    return engine


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

    try:
        return get_ondemand().supply(filters, charge=_charge)
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
    """Install on-demand generation as the app's supplier for unmet filters.

    Its commands (``measure-yields``, ``backfill``) join the ``facecat ingest`` group in
    ``ingest.cli``, which the CLI imports only when invoked.
    """
    register_supplier(app, supply)
