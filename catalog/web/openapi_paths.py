"""The operations of the OpenAPI document: ``PATHS``, one entry per route facecat serves.

Every route in ``app.url_map`` has its entry here and nothing else does (a test checks),
so a new endpoint adds its path to ``PATHS``. Kept apart from ``openapi_schemas`` because
these are per-endpoint descriptions, while the shared pieces they reference live there.
"""

from __future__ import annotations

from typing import Any

from catalog.web.openapi_schemas import _json, _ref
from catalog.web.params import GENDER_CHOICES

FILTERS = [
    _ref("parameters", "gender"),
    _ref("parameters", "minimum_age"),
    _ref("parameters", "maximum_age"),
]
ANYTHING = {
    "name": "anything",
    "in": "path",
    "required": True,
    "description": "Ignored; only there to defeat browser caches (e.g. a random number).",
    "schema": {"type": "string", "minLength": 1},
}


def _pick_errors() -> dict[str, Any]:
    return {
        "400": _ref("responses", "InvalidParameter"),
        "404": _ref("responses", "NoMatch"),
        "503": _ref("responses", "Unavailable"),
    }


def _redirect_operation(what: str, anything: bool) -> dict[str, Any]:
    return {
        "summary": f"Redirect to a random face's {what}",
        "description": f"302 to the {what} of a face picked uniformly among matching ones; "
        "`Cache-Control: no-store`, so `<img src>` gets a new face on every load."
        + (" The path suffix is ignored." if anything else ""),
        "tags": ["fakeface.rest"],
        "parameters": ([ANYTHING] if anything else []) + FILTERS,
        "responses": {"302": _ref("responses", "Redirect"), **_pick_errors()},
    }


def _cacheable_image(description: str, *types: str) -> dict[str, Any]:
    """A 200 of image bytes with an ETag and Cache-Control."""
    return {
        "description": description,
        "headers": {
            "ETag": {"schema": {"type": "string"}},
            "Cache-Control": {"schema": {"type": "string"}},
        },
        "content": {kind: {"schema": {"type": "string", "format": "binary"}} for kind in types},
    }


def _avatar_operation(identifier: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": "A stable avatar for an identifier",
        "description": "A square photo of a generated person derived from the identifier "
        "and the filters (seeded generation, not a catalog pick): the same face on every "
        "call, every server and forever, whatever the catalog holds. The first request "
        "for an identifier renders it (about a second on a CPU, charged to the server's "
        "on-demand capacity: 503 with Retry-After when that is in use); later ones resize "
        "the kept render. `Cache-Control: public, max-age=FACECAT_AVATAR_MAX_AGE`, a strong "
        "ETag, 304 on `If-None-Match`. Counted against the image-fetch limit.",
        "tags": ["images"],
        "parameters": [
            identifier,
            {
                "name": "size",
                "in": "query",
                "required": False,
                "description": "Edge of the square image in pixels.",
                "schema": {"type": "integer", "minimum": 16, "maximum": 1024, "default": 128},
            },
            *FILTERS,
            _ref("parameters", "image_format"),
        ],
        "responses": {
            "200": _cacheable_image("The avatar.", "image/jpeg", "image/webp"),
            "304": {"description": "Not modified (If-None-Match matched the ETag)."},
            "400": _ref("responses", "InvalidParameter"),
            "503": _ref("responses", "Unavailable"),
        },
    }


PATHS: dict[str, Any] = {
    "/face/json": {
        "get": {
            "summary": "A random face as JSON",
            "description": "Uniformly random among the faces matching the filters. "
            "Unknown query parameters (cache busters) are ignored.",
            "tags": ["fakeface.rest"],
            "parameters": FILTERS,
            "responses": {
                "200": _json(_ref("schemas", "Face"), "A face."),
                **_pick_errors(),
            },
        }
    },
    "/face/view": {"get": _redirect_operation("image", anything=False)},
    "/face/view/{anything}": {"get": _redirect_operation("image", anything=True)},
    "/thumb/view": {"get": _redirect_operation("thumbnail", anything=False)},
    "/thumb/view/{anything}": {"get": _redirect_operation("thumbnail", anything=True)},
    "/api/v1/faces/random": {
        "get": {
            "summary": "Several distinct random faces",
            "description": "Up to `count` distinct faces, uniformly random among matching "
            "ones. When fewer than `count` match, all matching faces are returned (the "
            "list is shorter, never padded with repeats); when none match, 404 no_match.",
            "tags": ["faces"],
            "parameters": [
                {
                    "name": "count",
                    "in": "query",
                    "required": False,
                    "description": "How many faces (at most FACECAT_MAX_RANDOM_COUNT, "
                    "default 100).",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
                },
                *FILTERS,
            ],
            "responses": {
                "200": _json(_ref("schemas", "FaceList"), "Distinct faces."),
                **_pick_errors(),
            },
        }
    },
    "/api/v1/faces/{id}": {
        "get": {
            "summary": "One face by id",
            "description": "The face's metadata. Looking a face up does not count as serving it.",
            "tags": ["faces"],
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 2147483647},
                }
            ],
            "responses": {
                "200": _json(_ref("schemas", "Face"), "The face."),
                "404": _ref("responses", "NotFound"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/img/{key}": {
        "get": {
            "summary": "Image bytes",
            "description": "A stored original (`faces/…`) or thumbnail (`thumbs/…`). URLs "
            "never expire: `Cache-Control: public, max-age=31536000, immutable` with a "
            "strong ETag; `If-None-Match` gives 304. Keys with `..`, empty segments, "
            "backslashes or a leading `/` are rejected with 400.",
            "tags": ["images"],
            "parameters": [
                {
                    "name": "key",
                    "in": "path",
                    "required": True,
                    "description": "Object key such as faces/female_31_<sha1>.jpg.",
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": _cacheable_image("The image.", "image/jpeg", "image/webp", "image/png"),
                "304": {"description": "Not modified (If-None-Match matched the ETag)."},
                "400": _json(_ref("schemas", "Error"), "The key is not a safe object name."),
                "404": _ref("responses", "NotFound"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/avatar/{identifier}": {
        "get": _avatar_operation(
            {
                "name": "identifier",
                "in": "path",
                "required": True,
                "description": "Any string naming the user (an e-mail, a user id).",
                "schema": {"type": "string", "minLength": 1, "maxLength": 256},
            }
        )
    },
    "/avatar": {
        "get": _avatar_operation(
            {
                "name": "u",
                "in": "query",
                "required": True,
                "description": "Any string naming the user (pravatar's `?u=`).",
                "schema": {"type": "string", "minLength": 1, "maxLength": 256},
            }
        )
    },
    "/api/v1/generate": {
        "get": {
            "summary": "Generate a face",
            "description": "A photoreal face made on request: the seed and `gender` fix "
            "the person, `age` moves them along the generator's age direction, so one "
            "seed at ages 1..75 ages one person. The same parameters give the same "
            "bytes. `seed` needs a professional or enterprise key (403 otherwise). "
            "Charged against the caller's generation limit (per class, burst and daily). "
            "`X-Face-Age` and `X-Face-Gender` report what the estimator robustly sees in "
            "the image, which can differ from what was asked.",
            "tags": ["generation"],
            "parameters": [
                _ref("parameters", "gender"),
                {
                    "name": "age",
                    "in": "query",
                    "required": False,
                    "description": "Age in years to render. Default: the seed's own.",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 100},
                },
                {
                    "name": "seed",
                    "in": "query",
                    "required": False,
                    "description": "Identity seed (professional keys and above).",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 4294967296},
                },
                {
                    "name": "resolution",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 64, "maximum": 1024, "default": 256},
                },
                _ref("parameters", "image_format"),
            ],
            "responses": {
                "200": {
                    "description": "The generated image.",
                    "headers": {
                        "X-Face-Age": {
                            "description": "Age the robust estimator sees (years).",
                            "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        },
                        "X-Face-Gender": {
                            "description": "Gender the robust estimator sees.",
                            "schema": {"type": "string", "enum": list(GENDER_CHOICES)},
                        },
                    },
                    "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        "image/webp": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "400": _ref("responses", "InvalidParameter"),
                "403": _json(_ref("schemas", "Error"), "`seed` needs a professional key or above."),
                "503": _json(
                    _ref("schemas", "Error"),
                    "The generation models or the rate-limit store are unavailable.",
                ),
            },
        }
    },
    "/stats": {
        "get": {
            "summary": "What the catalog holds",
            "description": "text/plain `N faces` (fakeface.rest's) by default; JSON counts "
            "per gender × age band with actual and target shares for `?format=json` or "
            "`Accept: application/json`.",
            "tags": ["status"],
            "parameters": [
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "description": "Force the representation instead of negotiating.",
                    "schema": {"type": "string", "enum": ["text", "json"]},
                }
            ],
            "responses": {
                "200": {
                    "description": "Catalog counts.",
                    "content": {
                        "text/plain": {
                            "schema": {"type": "string", "pattern": "^[0-9]+ faces?\n$"}
                        },
                        "application/json": {"schema": _ref("schemas", "Stats")},
                    },
                },
                "400": _ref("responses", "InvalidParameter"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness and dependencies",
            "description": "200 when the database answers and is migrated to this "
            "version's schema and the image storage answers; else 503 with `checks` naming "
            "what failed.",
            "tags": ["status"],
            "responses": {
                "200": _json(_ref("schemas", "Health"), "Healthy."),
                "503": _json(
                    _ref("schemas", "Error"), "A dependency is unreachable or not migrated."
                ),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "description": "Prometheus text: requests by route, method and status with latency "
            "histograms (added up over every gunicorn worker), faces per gender and age band, "
            "ingest and on-demand runs by outcome, faces generated and admitted, the last "
            "run's speed, and whether the database answered (`facecat_database_up`).",
            "tags": ["status"],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "tags": ["status"],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}
