"""``/openapi.json``: the OpenAPI 3.1 description of every endpoint facecat serves.

Written as Python data rather than a JSON file so shared pieces (the filter parameters,
the error body, the face object) are defined once and referenced: they are in
``openapi_schemas``, the operations in ``openapi_paths`` (the web page's in
``openapi_page``); this module assembles and serves
the document. Two tests keep it true: ``tests/catalog/test_openapi.py`` checks that every
route in ``app.url_map`` is documented and nothing else is, and runs schemathesis against
the live app, failing on any 5xx or any response that contradicts this document.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from catalog.web.openapi_facegen import FACEGEN_PATHS
from catalog.web.openapi_page import PAGE_PATHS
from catalog.web.openapi_paths import PATHS
from catalog.web.openapi_schemas import COMPONENTS, _ref

bp = Blueprint("openapi", __name__)

INFO: dict[str, Any] = {
    "title": "facecat",
    "version": "1",
    "summary": "A self-hosted catalog of generated faces with a fakeface.rest-compatible API.",
    "description": 'Every error is JSON: `{"error": code, "detail": sentence, ...}`. '
    "Every response carries `Access-Control-Allow-Origin: *` and `X-User-Class` "
    "(anon, basic, professional or enterprise, from `Authorization: Token <key>`; an "
    "unknown key is a 401). Requests over the caller's limits get 429 with `Retry-After`. "
    "HEAD is accepted wherever GET is (and does not count as serving a face).",
    "license": {"name": "MIT", "identifier": "MIT"},
}

# The order /docs shows the groups in (Swagger UI follows this list; without it, the
# order of the paths, which JSON serialisation sorts, put the web page's first).
TAGS: list[dict[str, str]] = [
    {"name": "fakeface.rest", "description": "The endpoints fakeface.rest had."},
    {"name": "faces", "description": "The v1 JSON API over the catalog."},
    {"name": "images", "description": "Image bytes and avatars."},
    {"name": "generation", "description": "Faces made on request."},
    {"name": "look-alikes", "description": "Faces resembling an uploaded one (ModelsLab)."},
    {"name": "status", "description": "What the catalog holds and whether it is healthy."},
    {"name": "page", "description": "The web page at / and this reference (HTML)."},
]


def document(max_random_count: int = 100) -> dict[str, Any]:
    """The OpenAPI document, with limits taken from the running configuration."""
    doc = {
        "openapi": "3.1.0",
        "info": INFO,
        "tags": TAGS,
        "paths": copy.deepcopy({**PATHS, **FACEGEN_PATHS, **PAGE_PATHS}),
        "components": COMPONENTS,
        # Optional authentication: anonymous ({}) or a token key.
        "security": [{}, {"Token": []}],
    }
    # Keys and limits apply to every operation (catalog.access.keys, catalog.access.limits).
    for item in doc["paths"].values():
        for operation in item.values():
            operation["responses"].setdefault("401", _ref("responses", "Unauthorized"))
            operation["responses"].setdefault("429", _ref("responses", "Throttled"))
    count = doc["paths"]["/api/v1/faces/random"]["get"]["parameters"][0]
    count["schema"]["maximum"] = max_random_count
    count["description"] = f"How many faces (1..{max_random_count})."
    return doc


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The document, describing this deployment's limits."""
    return jsonify(document(current_app.config["MAX_RANDOM_COUNT"]))
