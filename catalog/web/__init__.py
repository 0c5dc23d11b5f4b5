"""The HTTP side of the catalog: one blueprint per module, their parameters, unmet filters.

Views parse arguments, ask ``catalog.sql`` and ``catalog.storage``, and render; callers and
limits come from ``catalog.access``. Nothing below this package imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Blueprint


def blueprints() -> list[Blueprint]:
    """Every blueprint of the service, in registration order (``create_app`` registers them)."""
    from catalog.web import api, avatar, facegen, generate, images, metrics, openapi, page, status

    return [
        api.bp,
        images.bp,
        avatar.bp,
        generate.bp,
        status.bp,
        openapi.bp,
        metrics.bp,
        page.bp,
        facegen.bp,
    ]
