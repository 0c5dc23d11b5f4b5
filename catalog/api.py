"""The face endpoints: fakeface.rest's ``/face/json``, ``/face/view``, ``/thumb/view`` and
the v1 JSON API (``/api/v1/faces/random``, ``/api/v1/faces/<id>``).

Views only parse parameters, pick through ``catalog.selection``, fall back to
``catalog.fallback.supply_unmet`` when nothing matches, and render. HEAD works on every
route (Flask runs the GET view) but does not count as serving a face.
"""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.routing import PathConverter

from catalog import fallback
from catalog.db import serving_read
from catalog.errors import ApiError
from catalog.images import image_url, url_base
from catalog.limits import settle_request
from catalog.params import parse_filters, parse_int
from catalog.selection import Filters, get_face, pick_random
from catalog.serving import get_cell_cache, get_draw_ahead, get_recorder

bp = Blueprint("api", __name__)


class SuffixConverter(PathConverter):
    """Any cache-busting suffix, newlines included (``path`` stops at one, and
    ``/face/view/a%0Ab`` was a generic 404)."""

    regex = r"[^/][\s\S]*?"


# Before the routes below are added to the app's map, which is when they need it.
bp.record_once(lambda state: state.app.url_map.converters.setdefault("suffix", SuffixConverter))

RNG_EXTENSION = "facecat.rng"
_process_rng: tuple[int, random.Random] | None = None


def get_rng() -> random.Random:
    """The source of randomness for picks; tests install a seeded one in app.extensions.

    One generator per process, seeded from the OS after the fork: a module-level
    Random() would be copied into every pre-forked gunicorn worker with the same state,
    and SystemRandom costs a system call per draw.
    """
    global _process_rng
    installed = current_app.extensions.get(RNG_EXTENSION)
    if installed is not None:
        return installed
    if _process_rng is None or _process_rng[0] != os.getpid():
        _process_rng = (os.getpid(), random.Random(os.urandom(32)))
    return _process_rng[1]


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
                connection, filters, get_rng(), n, cache=get_cell_cache()
            )
        )

    if count == 1:
        face = get_draw_ahead().take(filters, draw)
        faces = [face] if face is not None else []
    else:
        faces = draw(count)
    if not faces:
        supplied = fallback.supply_unmet(filters)
        if supplied is None:
            raise fallback.no_match(filters)
        faces = [supplied]
    return faces


def count_served(faces: list[Any]) -> None:
    """Count one serving of each face, except for HEAD requests, which only look."""
    settle_request()  # a request refused by its lookup limit serves nothing
    if request.method != "HEAD":
        get_recorder().record(face.id for face in faces)


def serve(faces: list[Any]) -> list[dict[str, Any]]:
    """The faces' JSON (with their previous serving time), then count the serving."""
    recorder = get_recorder()
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
def face_json_view() -> Response:
    """One random face matching the filters, as JSON."""
    (body,) = serve(pick_faces(parse_filters(request.args)))
    return _no_store(jsonify(body))


@bp.get("/face/view", defaults={"anything": ""})
@bp.get("/face/view/<suffix:anything>")
def face_view(anything: str) -> Response:
    """302 to a random face's image; the path suffix only defeats browser caches."""
    (face,) = pick_faces(parse_filters(request.args))
    count_served([face])
    return no_store_redirect(image_url(face.image_key))


@bp.get("/thumb/view", defaults={"anything": ""})
@bp.get("/thumb/view/<suffix:anything>")
def thumb_view(anything: str) -> Response:
    """302 to a random face's thumbnail."""
    (face,) = pick_faces(parse_filters(request.args))
    count_served([face])
    return no_store_redirect(image_url(face.thumb_key))


@bp.get("/api/v1/faces/random")
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
def face_by_id(face_id: int) -> Response:
    """One face's metadata (looking it up does not count as serving it)."""
    face = serving_read(lambda connection: get_face(connection, face_id))
    if face is None:
        raise ApiError(404, "not_found", f"No face has id {face_id}.", id=face_id)
    return jsonify(face_json(face, get_recorder().pending_since(face_id)))
