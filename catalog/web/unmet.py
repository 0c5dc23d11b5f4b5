"""The one place where an unmet filter is handed to on-demand generation.

Every endpoint that picks faces calls ``supply_unmet`` when no stored face matches. It
asks the app's ``Supplier`` service, which ``catalog.ingest_services`` provides as
``generate_on_demand`` (the engine, charged to the server's fill capacity), so no
endpoint changes when generation arrives. With no supplier provided, or with
``FACECAT_ONDEMAND_ENABLED=false``, there is nothing to supply and the endpoint answers
404 ``no_match``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from flask import current_app

from catalog.access.budgets import charge_fill
from catalog.access.limits import settle_request
from catalog.errors import ApiError
from catalog.services import find_service
from catalog.sql.cells import Filters
from catalog.sql.models import Face
from ingest.ondemand.ports import FaceSupplier, Target

logger = logging.getLogger(__name__)


class Supplier(Protocol):
    """Makes a face for an unmet filter: one already committed to the catalog (so it can
    be served, counted and fetched again by id), or None when it cannot in budget."""

    def __call__(self, filters: Filters) -> Face | None: ...


def _supplier() -> Supplier | None:
    try:
        return find_service(Supplier)  # type: ignore[type-abstract]
    except LookupError:
        return None


def supply_unmet(filters: Filters) -> Face | None:
    """A new face matching ``filters`` when none is stored, or None if none can be made."""
    settle_request()  # a request refused by its lookup limit generates nothing
    if not current_app.config["ONDEMAND_ENABLED"]:
        return None
    supplier = _supplier()
    if supplier is None:
        logger.info("no stored face matches %s and no on-demand supplier is installed", filters)
        return None
    return supplier(filters)


def generate_on_demand(filters: Filters) -> Face | None:
    """The app's supplier: a face from the on-demand engine, None, or a 404 at once.

    The run is charged to the server's capacity for on-demand fills (``charge_fill``),
    not to the caller: the face joins the catalog for everyone, and an ``<img>`` cannot
    send a key. Only the request that starts a run charges it.

    :raise ApiError: 404 ``no_match`` with ``reason: unreachable`` and ``nearby``
        filters when no strategy is likely to reach ``filters`` within the budget; the
        503 ``fill_capacity`` of a server whose fill capacity is in use.
    """
    from ingest.ondemand.nearby import Unreachable

    target = Target(filters.gender, filters.minimum_age, filters.maximum_age)
    engine = find_service(FaceSupplier)  # type: ignore[type-abstract]
    try:
        return engine.supply(target, charge=charge_fill)  # type: ignore[return-value]
    except Unreachable as exc:
        raise ApiError(
            404,
            "no_match",
            exc.detail,
            filters=filters.as_dict(),
            reason="unreachable",
            nearby=exc.nearby,
        ) from None


def no_match(filters: Filters) -> ApiError:
    """The 404 an endpoint raises when neither the catalog nor the supplier had a face."""
    if current_app.config["ONDEMAND_ENABLED"] and _supplier() is not None:
        detail = (
            "No stored face matches these filters and on-demand generation could not "
            "make one within its time budget."
        )
    else:
        detail = "No stored face matches these filters (on-demand generation is not enabled)."
    return ApiError(404, "no_match", detail, filters=filters.as_dict())
