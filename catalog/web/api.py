"""The face endpoints: fakeface.rest's ``/face/json``, ``/face/view``, ``/thumb/view`` and
the v1 JSON API (``/api/v1/faces/random``, ``/api/v1/faces/<id>``).

Views only parse parameters, pick through ``catalog.sql.selection``, fall back to
``catalog.web.unmet.supply_unmet`` when nothing matches, and render. HEAD works on every
route (Flask runs the GET view) but does not count as serving a face.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.routing import PathConverter

from catalog.access.limits import LOOKUPS, limited, settle_request
from catalog.errors import ApiError
from catalog.services import find_service
from catalog.sql.cells import CellCache, Filters
from catalog.sql.db import serving_read
from catalog.sql.selection import get_face, pick_random
from catalog.sql.serving import DrawAhead, ServedRecorder
from catalog.web import unmet
from catalog.web.images import image_url, url_base
from catalog.web.params import parse_filters, parse_int

bp = Blueprint("api", __name__)


class SuffixConverter(PathConverter):
    """Any cache-busting suffix, newlines included (``path`` stops at one, and
    ``/face/view/a%0Ab`` was a generic 404)."""

    regex = r"[^/][\s\S]*?"


# Before the routes below are added to the app's map, which is when they need it.
bp.record_once(lambda state: state.app.url_map.converters.setdefault("suffix", SuffixConverter))

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(when: datetime) -> str:
    """RFC 9110 IMF-fixdate of a UTC datetime, as fakeface.rest's JSON dates were.

    The same text as ``werkzeug.http.http_date`` (a test compares them) at a tenth of its
    cost: two of them per face were a tenth of serving one. Naive datetimes are UTC, as
    the catalog stores them.
    """
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return (
        f"{_DAYS[when.weekday()]}, {when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} GMT"
    )


def face_json(face: Any, served_since: datetime | None = None) -> dict[str, Any]:
    """A face (``Face`` or row) as fakeface.rest sent it, plus facecat's extra keys.

    ``last_served`` is the previous serving time (null if never): the stored value, or
    ``served_since`` when this process served the face later and has not written it yet.
    """
    last = face.last_served
    if served_since is not None and (last is None or served_since > last):
        last = served_since
    confidence = face.p_female if face.gender == "female" else 1.0 - face.p_female
    base = url_base()
    return {
        "id": face.id,
        "age": int(face.age),
        "gender": face.gender,
        "gender_confidence": round(confidence, 4),
        "filename": face.filename,
        "image_url": image_url(face.image_key, base),
        "thumb_url": image_url(face.thumb_key, base),
        "width": face.width,
        "height": face.height,
        "date_added": http_date(face.date_added),
        "last_served": http_date(last) if last else None,
        "source": face.generator,
        "native_size": face.native_size,
        "truncation": face.truncation,
    }


def pick_faces(filters: Filters, count: int = 1) -> list[Any]:
    """Up to ``count`` distinct matching faces; the on-demand hook when none is stored.

    :raise ApiError: 404 ``no_match`` when neither the catalog nor the hook has a face.
    """

    def draw(n: int) -> list[Any]:
        return serving_read(
            lambda connection: pick_random(
                connection, filters, find_service(random.Random), n, cache=find_service(CellCache)
            )
        )

    if count == 1:
        face = find_service(DrawAhead).take(filters, draw)
        faces = [face] if face is not None else []
    else:
        faces = draw(count)
    if not faces:
        supplied = unmet.supply_unmet(filters)
        if supplied is None:
            raise unmet.no_match(filters)
        faces = [supplied]
    return faces


def count_served(faces: list[Any]) -> None:
    """Count one serving of each face, except for HEAD requests, which only look."""
    settle_request()  # a request refused by its lookup limit serves nothing
    if request.method != "HEAD":
        find_service(ServedRecorder).record(face.id for face in faces)


def serve(faces: list[Any]) -> list[dict[str, Any]]:
    """The faces' JSON (with their previous serving time), then count the serving."""
    recorder = find_service(ServedRecorder)
    bodies = [face_json(face, recorder.pending_since(face.id)) for face in faces]
    count_served(faces)
    return bodies


def no_store_redirect(location: str) -> Response:
    """A 302 browsers must not cache, so every <img src=…/face/view> load is a new face."""
    # No HTML "Redirecting..." body: clients follow Location, and the API never sends HTML.
    return Response(
        status=302,
        mimetype="text/plain",
        headers={"Location": location, "Cache-Control": "no-store"},
    )


@bp.get("/face/json")
@limited(LOOKUPS)
def face_json_view() -> Response:
    """One random face matching the filters, as JSON."""
    (body,) = serve(pick_faces(parse_filters(request.args)))
    return _no_store(jsonify(body))


@bp.get("/face/view", defaults={"anything": ""})
@bp.get("/face/view/<suffix:anything>")
@limited(LOOKUPS)
def face_view(anything: str) -> Response:
    """302 to a random face's image; the path suffix only defeats browser caches."""
    (face,) = pick_faces(parse_filters(request.args))
    count_served([face])
    return no_store_redirect(image_url(face.image_key))


@bp.get("/thumb/view", defaults={"anything": ""})
@bp.get("/thumb/view/<suffix:anything>")
@limited(LOOKUPS)
def thumb_view(anything: str) -> Response:
    """302 to a random face's thumbnail."""
    (face,) = pick_faces(parse_filters(request.args))
    count_served([face])
    return no_store_redirect(image_url(face.thumb_key))


@bp.get("/api/v1/faces/random")
@limited(LOOKUPS)
def random_faces() -> Response:
    """``count`` distinct random faces; fewer when fewer match, 404 when none do."""
    limit = current_app.config["MAX_RANDOM_COUNT"]
    count = parse_int(request.args, "count", 1, 1, limit)
    return _no_store(jsonify({"results": serve(pick_faces(parse_filters(request.args), count))}))


def _no_store(response: Response) -> Response:
    """A random pick must not be cached: the next request should get another face."""
    response.cache_control.no_store = True
    return response


@bp.get("/api/v1/faces/<int(max=2147483647):face_id>")
@limited(LOOKUPS)
def face_by_id(face_id: int) -> Response:
    """One face's metadata (looking it up does not count as serving it)."""
    face = serving_read(lambda connection: get_face(connection, face_id))
    if face is None:
        raise ApiError(404, "not_found", f"No face has id {face_id}.", id=face_id)
    return jsonify(face_json(face, find_service(ServedRecorder).pending_since(face_id)))
