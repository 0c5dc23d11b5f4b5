"""``/stats`` (what the catalog holds, against the target composition) and ``/healthz``.

Both read only the ``face_cell`` counters (at most 202 rows) or ping the backends, so they
stay cheap enough for a load balancer to poll.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from analysis.vocabulary import BANDS, GENDERS
from catalog.access.limits import Limiter
from catalog.errors import ApiError
from catalog.services import find_service
from catalog.sql.cells import CellCount, all_cells, counts_by_band
from catalog.sql.db import current_revision, head_revision, schema_lag, serving_read
from catalog.storage import BucketMissing, Storage, StorageError
from catalog.web.params import parse_choice
from ingest.bands import DEFAULT_COMPOSITION

logger = logging.getLogger(__name__)

bp = Blueprint("status", __name__)


def target_composition() -> dict[str, float]:
    """Target share per ``gender:band`` cell: FACECAT_TARGET_COMPOSITION or the default."""
    return current_app.config.get("TARGET_COMPOSITION") or DEFAULT_COMPOSITION


def catalog_stats(cells: list[CellCount], targets: dict[str, float]) -> dict[str, Any]:
    """Counts per gender × age band with actual and target shares (the /stats JSON)."""
    counts = {f"{g}:{b}": n for (g, b), n in counts_by_band(cells).items()}
    total = sum(counts.values())
    rows = []
    for gender in GENDERS:
        for band in BANDS:
            key = f"{gender}:{band.label}"
            rows.append(
                {
                    "gender": gender,
                    "band": band.label,
                    "minimum_age": band.low,
                    "maximum_age": band.high,
                    "count": counts[key],
                    "share": round(counts[key] / total, 4) if total else 0.0,
                    "target": round(targets.get(key, 0.0), 4),
                }
            )
    by_gender = {g: sum(counts[f"{g}:{b.label}"] for b in BANDS) for g in GENDERS}
    return {"total": total, "genders": by_gender, "bands": rows}


def _wants_json() -> bool:
    """``?format=json`` or ``text``; otherwise the Accept header (text when indifferent)."""
    fmt = parse_choice(request.args, "format", ("text", "json"))
    if fmt is not None:
        return fmt == "json"
    best = request.accept_mimetypes.best_match(["text/plain", "application/json"])
    return best == "application/json"


@bp.get("/stats")
def stats() -> Response:
    """fakeface.rest's "N faces" as text/plain, or counts per gender × band as JSON."""
    body = catalog_stats(serving_read(all_cells), target_composition())
    if _wants_json():
        response = jsonify(body)
    else:
        noun = "face" if body["total"] == 1 else "faces"
        response = Response(f"{body['total']} {noun}\n", mimetype="text/plain")
    response.vary.add("Accept")
    response.headers["Cache-Control"] = "no-cache"
    return response


def check_database() -> str | None:
    """None if the database answers and is migrated to this code's head, else why not.

    Why the migration: on a database nobody upgraded, every face request answers 503 while
    a bare ``SELECT 1`` succeeds, so a load balancer would keep sending traffic to an
    instance that cannot serve any.
    """
    try:
        current = serving_read(current_revision)
    except SQLAlchemyError as exc:
        logger.warning("healthz: database unreachable: %s", exc)
        return "unreachable"
    lag = schema_lag(current, head_revision())
    if lag:
        logger.warning("healthz: database %s", lag)
        return f"{lag}: run `facecat db upgrade`"
    return None


def check_storage() -> str | None:
    """None if the storage backend answers, else why not."""
    try:
        find_service(Storage).ping()
    except BucketMissing as exc:
        logger.warning("healthz: %s", exc)
        return "bucket_missing"
    except StorageError as exc:
        logger.warning("healthz: storage unreachable: %s", exc)
        return "unreachable"
    return None


def check_rate_limits() -> str | None:
    """None if the shared rate-limit store answers, else why not.

    While Redis is down each process counts on its own, so limits are per process, not
    shared: the service works, but not as configured, and the check says so. Bounded by
    ``RATELIMIT_STORAGE_TIMEOUT``.
    """
    if not find_service(Limiter).storage.check():
        logger.warning("healthz: rate-limit storage unreachable")
        return "unreachable"
    return None


@bp.get("/healthz")
def healthz() -> Response:
    """200 when the database, the storage backend and (when configured) the shared
    rate-limit store are reachable, else 503 JSON naming what is not."""
    checks = {"database": check_database(), "storage": check_storage()}
    if not current_app.config["RATELIMIT_STORAGE_URL"].startswith("memory://"):
        checks["rate_limits"] = check_rate_limits()
    failed = sorted(name for name, problem in checks.items() if problem)
    if failed:
        raise ApiError(
            503,
            "unhealthy",
            f"Failing checks: {', '.join(failed)}.",
            checks={name: problem or "ok" for name, problem in checks.items()},
            headers={"Cache-Control": "no-store", "Retry-After": "10"},
        )
    response = jsonify({"status": "ok", "checks": {name: "ok" for name in checks}})
    response.headers["Cache-Control"] = "no-store"
    return response
