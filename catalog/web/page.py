"""``GET /``: the web page (gallery, coverage chart, generate playground) and ``/docs``.

Why server-rendered: the gallery and the chart are the catalog's own answers (the same
pick as ``/api/v1/faces/random``, the same counts as ``/stats``), so the page works
without JavaScript and a test client can check it; JavaScript only copies snippets and
drives the playground. Everything the page loads comes from facecat itself (templates and
static files ship in this package, Swagger UI's files in the ``flask-swagger-ui`` wheel):
no CDN, so it works offline, and the Content-Security-Policy allows only this origin.

Filters come from a plain GET form. An empty field means "no bound" (a form sends every
field); any other invalid value is the API's usual 400 JSON naming the parameter, as
everywhere else (DESIGN.md: never an HTML error page). The form's number fields carry
the same bounds, so a browser refuses bad values before sending them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, current_app, render_template, request, send_from_directory

from analysis.vocabulary import MAX_AGE, MIN_AGE
from catalog.access.limits import LOOKUPS, limited
from catalog.errors import ApiError
from catalog.services import find_service
from catalog.sql.cells import CellCache, Filters, all_cells
from catalog.sql.db import serving_read
from catalog.sql.selection import pick_random
from catalog.web.generate import FORMATS, MAX_RESOLUTION, MIN_RESOLUTION
from catalog.web.images import image_url, url_base
from catalog.web.params import GENDER_CHOICES, parse_filters
from catalog.web.status import catalog_stats, target_composition

bp = Blueprint(
    "page",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

GALLERY_SIZE = 24
LIFETIME_AGES = (5, 15, 25, 40, 60, 75)
FILTER_NAMES = ("gender", "minimum_age", "maximum_age")
# Swagger UI's files from the flask-swagger-ui wheel that /docs needs; nothing else of
# that folder is served.
SWAGGER_DIST = files("flask_swagger_ui") / "dist"
SWAGGER_ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css"})


def form_filters(args: Mapping[str, str]) -> Filters:
    """The gallery's filters: empty form fields are absent, the rest parsed as the API does."""
    present = {name: args[name] for name in FILTER_NAMES if args.get(name)}
    return parse_filters(present)


def filter_query(filters: Filters) -> str:
    """The query string that asks the API for ``filters`` (defaults left out)."""
    pairs: list[tuple[str, Any]] = []
    if filters.gender:
        pairs.append(("gender", filters.gender))
    if filters.minimum_age != MIN_AGE:
        pairs.append(("minimum_age", filters.minimum_age))
    if filters.maximum_age != MAX_AGE:
        pairs.append(("maximum_age", filters.maximum_age))
    return urlencode(pairs)


def gallery(filters: Filters) -> list[dict[str, Any]]:
    """Up to ``GALLERY_SIZE`` random matching faces, youngest first, with their snippets.

    Showing faces here does not count as serving them (no ``ServedRecorder``), and an
    empty result does not start on-demand generation: browsing must not generate.
    """
    faces = serving_read(
        lambda connection: pick_random(
            connection,
            filters,
            find_service(random.Random),
            GALLERY_SIZE,
            cache=find_service(CellCache),
        )
    )
    base, root = url_base(), request.root_url
    cards = []
    for face in sorted(faces, key=lambda f: (int(f.age), f.gender, f.id)):
        url = image_url(face.image_key, base)
        alt = f"Generated face: {face.gender}, age {int(face.age)}"
        cards.append(
            {
                "id": face.id,
                "gender": face.gender,
                "age": int(face.age),
                "alt": alt,
                "thumb_url": image_url(face.thumb_key, base),
                "image_url": url,
                "img_snippet": f'<img src="{url}" alt="{alt}">',
                "json_url": f"{root}api/v1/faces/{face.id}",
            }
        )
    return cards


def coverage() -> dict[str, Any]:
    """The /stats counts, plus each row's bar length in percent of the largest share."""
    stats = catalog_stats(serving_read(all_cells), target_composition())
    scale = max(
        [row["share"] for row in stats["bands"]] + [row["target"] for row in stats["bands"]]
    )
    for row in stats["bands"]:
        row["share_bar"] = round(100 * row["share"] / scale, 1) if scale else 0.0
        row["target_mark"] = round(100 * row["target"] / scale, 1) if scale else 0.0
    return stats


@bp.get("/")
@limited(LOOKUPS)
def index() -> Response:
    """The page: what facecat is, the gallery for the form's filters, coverage, playground."""
    filters = form_filters(request.args)
    query = filter_query(filters)
    root = request.root_url
    suffix = f"?{query}" if query else ""
    html = render_template(
        "index.html",
        filters=filters,
        genders=GENDER_CHOICES,
        min_age=MIN_AGE,
        max_age=MAX_AGE,
        faces=gallery(filters),
        gallery_size=GALLERY_SIZE,
        view_snippet=f'<img src="{root}face/view{suffix}" alt="A generated face">',
        json_url=f"{root}face/json{suffix}",
        stats=coverage(),
        formats=FORMATS,
        min_resolution=MIN_RESOLUTION,
        max_resolution=MAX_RESOLUTION,
        lifetime_ages=LIFETIME_AGES,
        ondemand=current_app.config["ONDEMAND_ENABLED"],
    )
    return _page(html)


@bp.get("/docs")
def docs() -> Response:
    """The API reference: Swagger UI rendering ``/openapi.json``, served from this app."""
    return _page(render_template("docs.html"))


@bp.get("/docs/assets/<name>")
def swagger_asset(name: str) -> Response:
    """One of Swagger UI's files, from the installed ``flask-swagger-ui`` package."""
    if name not in SWAGGER_ASSETS:
        raise ApiError(404, "not_found", "No such API-reference asset.", name=name)
    return send_from_directory(str(SWAGGER_DIST), name, max_age=86400)


def _page(html: str) -> Response:
    """An HTML response; never cached, since the gallery is a new random pick each time."""
    response = Response(html, mimetype="text/html")
    response.cache_control.no_cache = True
    return response


def content_security_policy() -> str:
    """Only this origin (no inline script or style), plus where images may live.

    ``data:`` for Swagger UI's icons, ``blob:`` for playground images made from fetched
    bytes, and ``FACECAT_PUBLIC_BASE_URL``'s origin when images are served from there.
    """
    images = ["'self'", "data:", "blob:"]
    public = current_app.config.get("PUBLIC_BASE_URL")
    if public:
        parts = urlsplit(public)
        if parts.scheme and parts.netloc:
            images.append(f"{parts.scheme}://{parts.netloc}")
    return "; ".join(
        [
            "default-src 'self'",
            f"img-src {' '.join(images)}",
            "object-src 'none'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'self'",
        ]
    )


@bp.after_request
def security_headers(response: Response) -> Response:
    """CSP and friends on the page, /docs and their static files."""
    response.headers["Content-Security-Policy"] = content_security_policy()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
