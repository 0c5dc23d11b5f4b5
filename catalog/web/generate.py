"""``GET /api/v1/generate``: a face made on request (Face Studio's generate endpoint).

Order of checks, so each answer is the cheapest true one: parameters (400 naming the
parameter), plan (``seed`` needs professional or above: 403), models available (503, and
no budget spent), generation budget (``catalog.access.budgets.charge_generation``: 429), then the
render in ``ingest.seeded``. torch is imported only when the first request arrives.

The response is the image itself; ``X-Face-Age`` and ``X-Face-Gender`` say what the
augmentation-robust estimator sees in it (which may differ from what was asked: the
generator cannot reach every age), ``X-Face-Seed`` the seed used when one was given.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState

from catalog.access.budgets import charge_generation
from catalog.access.keys import require_class
from catalog.errors import ApiError
from catalog.services import find_service, provide_service
from catalog.web.params import GENDER_CHOICES, invalid, parse_choice, parse_int

logger = logging.getLogger(__name__)

bp = Blueprint("generate", __name__)

MIN_SEED, MAX_SEED = 1, 2**32
MIN_RESOLUTION, MAX_RESOLUTION, DEFAULT_RESOLUTION = 64, 1024, 256
FORMATS = ("jpeg", "webp")
SEED_CLASS = "professional"
_DIGITS = re.compile(r"[0-9]{1,10}")


def parse_seed(args: Mapping[str, str]) -> int | None:
    """``seed`` in 1..2^32, or None when absent."""
    raw = args.get("seed")
    if raw is None:
        return None
    if not _DIGITS.fullmatch(raw) or not MIN_SEED <= int(raw) <= MAX_SEED:
        raise invalid("seed", f"seed must be an integer from 1 to {MAX_SEED} (got {raw!r}).")
    return int(raw)


def parse_age(args: Mapping[str, str]) -> int | None:
    """``age`` in 0..100, or None when absent (the seed's own age)."""
    if args.get("age") is None:
        return None
    return parse_int(args, "age", 0, 0, 100)


class Studio(Protocol):
    """What this endpoint needs of ``ingest.seeded.SeededStudio``, and the type the app
    finds it by (the class itself would import torch with this module)."""

    @property
    def models(self) -> Any:
        """The loaded models (loading them the first time)."""

    def render(self, seed: int, **options: Any) -> Any:
        """One seeded face: bytes, content type, estimated age and gender."""

    def portrait(self, seed: int, **options: Any) -> bytes:
        """The same face as encoded bytes only, without the estimator's verdict."""


def _provide_studio(state: BlueprintSetupState) -> None:
    """Make the app's studio on first use, importing torch only then."""
    config = state.app.config

    def make() -> Studio:
        from ingest.seeded import studio_for

        return studio_for(config)  # type: ignore[no-any-return]

    provide_service(state.app, Studio, make)


bp.record_once(_provide_studio)


def models_ready(studio: Any) -> None:
    """Load the models (once) or answer 503 naming what is missing; nothing is charged."""
    try:
        studio.models  # noqa: B018 - the property loads them
    except Exception as exc:
        logger.error("seeded generation unavailable: %s", exc)
        raise ApiError(
            503,
            "generator_unavailable",
            "The generation models are not available on this server; try again later.",
            headers={"Retry-After": "60"},
        ) from None


@bp.get("/api/v1/generate")
def generate() -> Response:
    """A generated face as image bytes; same parameters and seed, same bytes."""
    gender = parse_choice(request.args, "gender", GENDER_CHOICES)
    age = parse_age(request.args)
    seed = parse_seed(request.args)
    resolution = parse_int(
        request.args, "resolution", DEFAULT_RESOLUTION, MIN_RESOLUTION, MAX_RESOLUTION
    )
    image_format = parse_choice(request.args, "image_format", FORMATS) or "jpeg"
    if seed is not None:
        require_class(SEED_CLASS, "The seed parameter")
    if request.method == "HEAD":
        # What a GET would answer, without rendering a face or spending the budget: a
        # HEAD is a probe (link checkers, caches), not a request for a generation.
        response = Response(mimetype=f"image/{image_format}")
        response.cache_control.no_store = True
        return response
    studio = find_service(Studio)
    models_ready(studio)
    charge_generation()
    face = studio.render(
        seed if seed is not None else MIN_SEED + secrets.randbelow(MAX_SEED),
        gender=gender,
        age=age,
        resolution=resolution,
        image_format=image_format,
        quality=current_app.config["JPEG_QUALITY"],
    )
    response = Response(face.data, mimetype=face.content_type)
    response.headers["X-Face-Age"] = str(round(face.estimated_age))
    response.headers["X-Face-Gender"] = face.estimated_gender
    if seed is not None:
        response.headers["X-Face-Seed"] = str(seed)
        # Deterministic, but only for the key that may ask for it (Vary: Authorization).
        response.cache_control.private = True
        response.cache_control.max_age = 86400
    else:
        response.cache_control.no_store = True
    return response
