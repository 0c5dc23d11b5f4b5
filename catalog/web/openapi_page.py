"""The web page's operations in the OpenAPI document (``/``, ``/docs`` and their files).

They are HTML and static files, not API, but every route the app serves is documented
(``tests/catalog/test_openapi.py``), so clients and schemathesis know what they answer.
Kept apart from ``openapi_paths`` so that module stays about the API; it merges these.
"""

from __future__ import annotations

from typing import Any

from catalog.web.openapi_schemas import _ref

_HTML = {"text/html": {"schema": {"type": "string"}}}


def _file_parameter(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string"},
    }


def _file_responses(*types: str) -> dict[str, Any]:
    binary = {"schema": {"type": "string"}}
    return {
        "200": {"description": "The file.", "content": {kind: binary for kind in types}},
        "304": {"description": "Not modified (If-None-Match or If-Modified-Since matched)."},
        "404": _ref("responses", "NotFound"),
    }


PAGE_PATHS: dict[str, Any] = {
    "/": {
        "get": {
            "summary": "The web page",
            "description": "HTML: what facecat is, a gallery of up to 24 random stored faces "
            "matching the filters (each with copyable `<img>` and JSON URLs), the "
            "catalog's coverage per gender × age band (the `/stats` counts) and a "
            "playground for `/api/v1/generate`. Empty filter values mean no bound (a "
            "form sends every field); other invalid values are the usual 400. Browsing "
            "never generates faces and does not count as serving them.",
            "tags": ["page"],
            "parameters": [
                _ref("parameters", "gender"),
                _ref("parameters", "minimum_age"),
                _ref("parameters", "maximum_age"),
            ],
            "responses": {
                "200": {"description": "The page.", "content": _HTML},
                "400": _ref("responses", "InvalidParameter"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/docs": {
        "get": {
            "summary": "The API reference",
            "description": "HTML: Swagger UI rendering `/openapi.json`, its files served by "
            "facecat (from the flask-swagger-ui package), never from a CDN.",
            "tags": ["page"],
            "responses": {"200": {"description": "The page.", "content": _HTML}},
        }
    },
    "/docs/assets/{name}": {
        "get": {
            "summary": "Swagger UI's files",
            "description": "`swagger-ui-bundle.js` and `swagger-ui.css`; any other name is a 404.",
            "tags": ["page"],
            "parameters": [_file_parameter("name", "The file's name.")],
            "responses": _file_responses("text/javascript", "text/css"),
        }
    },
    "/static/{filename}": {
        "get": {
            "summary": "The page's script and style sheet",
            "description": "`page.css`, `page.js`, `docs.js` and `favicon.svg`, shipped in "
            "the package.",
            "tags": ["page"],
            "parameters": [_file_parameter("filename", "The file's name.")],
            "responses": _file_responses("text/javascript", "text/css", "image/svg+xml"),
        }
    },
}
