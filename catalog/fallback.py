"""The one place where an unmet filter is handed to on-demand generation.

Every endpoint that picks faces calls ``supply_unmet`` when no stored face matches.
On-demand generation registers its supplier here with ``register_supplier`` (from
``catalog.ondemand.init_app``), so no endpoint changes when generation arrives. With no supplier
registered, or with ``FACECAT_ONDEMAND_ENABLED=false``, there is nothing to supply and the
endpoint answers 404 ``no_match``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask, current_app

from catalog.errors import ApiError
from catalog.limits import settle_request
from catalog.models import Face
from catalog.selection import Filters

logger = logging.getLogger(__name__)

# Takes the filters, returns a face already committed to the catalog (so it can be
# served, counted and fetched again by id), or None when it cannot make one in budget.
Supplier = Callable[[Filters], Face | None]

_EXTENSION = "facecat.supplier"


def register_supplier(app: Flask, supplier: Supplier) -> None:
    """Install the function that makes a face for an unmet filter."""
    app.extensions[_EXTENSION] = supplier


def supply_unmet(filters: Filters) -> Face | None:
    """A new face matching ``filters`` when none is stored, or None if none can be made."""
    settle_request()  # a request refused by its lookup limit generates nothing
    if not current_app.config["ONDEMAND_ENABLED"]:
        return None
    supplier: Supplier | None = current_app.extensions.get(_EXTENSION)
    if supplier is None:
        logger.info("no stored face matches %s and no on-demand supplier is installed", filters)
        return None
    return supplier(filters)


def no_match(filters: Filters) -> ApiError:
    """The 404 an endpoint raises when neither the catalog nor the supplier had a face."""
    if current_app.config["ONDEMAND_ENABLED"] and _EXTENSION in current_app.extensions:
        detail = (
            "No stored face matches these filters and on-demand generation could not "
            "make one within its time budget."
        )
    else:
        detail = "No stored face matches these filters (on-demand generation is not enabled)."
    return ApiError(404, "no_match", detail, filters=filters.as_dict())
