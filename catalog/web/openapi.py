"""``/openapi.json``: the OpenAPI 3.1 description of every endpoint facecat serves.

Written as Python data rather than a JSON file so shared pieces (the filter parameters,
the error body, the face object) are defined once and referenced. Two tests keep it true:
``tests/catalog/test_openapi.py`` checks that every route in ``app.url_map`` is documented
and nothing else is, and runs schemathesis against the live app, failing on any 5xx or any
response that contradicts this document. Later issues add their paths to ``PATHS``.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Response, current_app, jsonify

from catalog.web.params import GENDER_CHOICES

bp = Blueprint("openapi", __name__)

HTTP_DATE_PATTERN = (
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} "
    r"[0-9]{2}:[0-9]{2}:[0-9]{2} GMT$"
)


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _age_parameter(name: str, default: int, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": {"type": "integer", "minimum": 0, "maximum": 100, "default": default},
    }


COMPONENTS: dict[str, Any] = {
    "parameters": {
        "gender": {
            "name": "gender",
            "in": "query",
            "required": False,
            "description": "Only faces of this gender. Default: either.",
            "schema": {"type": "string", "enum": list(GENDER_CHOICES)},
        },
        "minimum_age": _age_parameter(
            "minimum_age", 0, "Youngest age (years) to match. Must not exceed maximum_age."
        ),
        "maximum_age": _age_parameter(
            "maximum_age", 100, "Oldest age (years) to match. Must not be below minimum_age."
        ),
        "image_format": {
            "name": "image_format",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["jpeg", "webp"], "default": "jpeg"},
        },
    },
    "headers": {
        "NoStore": {
            "description": "Redirects are never cached, so every load picks a new face.",
            "schema": {"type": "string", "const": "no-store"},
        },
        "Location": {
            "description": "Absolute URL of the image.",
            "schema": {"type": "string", "format": "uri"},
        },
    },
    "schemas": {
        "Face": {
            "type": "object",
            "description": "One face. The first eight keys are fakeface.rest's.",
            "required": [
                "age",
                "gender",
                "filename",
                "image_url",
                "date_added",
                "last_served",
                "source",
                "id",
                "thumb_url",
                "width",
                "height",
                "gender_confidence",
            ],
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "age": {"type": "integer", "minimum": 0, "maximum": 100},
                "gender": {"type": "string", "enum": list(GENDER_CHOICES)},
                "gender_confidence": {
                    "type": "number",
                    "minimum": 0,
                    "maximum": 1,
                    "description": "The estimator's probability for the stated gender.",
                },
                "filename": {
                    "type": "string",
                    "pattern": r"^(male|female)_[0-9]{1,3}_[0-9a-f]{40}\.(jpg|webp)$",
                },
                "image_url": {"type": "string", "format": "uri"},
                "thumb_url": {"type": "string", "format": "uri"},
                "width": {"type": "integer", "minimum": 1},
                "height": {"type": "integer", "minimum": 1},
                "date_added": {
                    "type": "string",
                    "pattern": HTTP_DATE_PATTERN,
                    "examples": ["Sun, 02 Aug 2020 22:08:56 GMT"],
                },
                "last_served": {
                    "type": ["string", "null"],
                    "pattern": HTTP_DATE_PATTERN,
                    "description": "When this face was served before this response; null if never.",
                },
                "source": {
                    "type": "string",
                    "description": "The generator that made the face: mobilestylegan "
                    "(photoreal, the default), dcgan (legacy 64 px) or conditional (the "
                    "retired 64 px conditional generator, for faces it made earlier).",
                },
                "native_size": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "Edge in pixels the generator rendered the face at "
                    "(1024 for mobilestylegan); the stored image is resampled to width.",
                },
                "truncation": {
                    "type": ["number", "null"],
                    "minimum": 0,
                    "maximum": 1,
                    "description": "Truncation ψ of the photoreal generator's style "
                    "sampling; null for the legacy generators.",
                },
            },
        },
        "FaceList": {
            "type": "object",
            "required": ["results"],
            "properties": {
                "results": {
                    "type": "array",
                    "items": _ref("schemas", "Face"),
                    "description": "Distinct faces, in random order; fewer than count "
                    "when fewer match.",
                }
            },
        },
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {
                "error": {"type": "string", "description": "Stable machine-readable code."},
                "detail": {"type": "string", "description": "A sentence for humans."},
            },
            "additionalProperties": True,
        },
        "InvalidParameter": {
            "allOf": [
                _ref("schemas", "Error"),
                {
                    "type": "object",
                    "required": ["parameter"],
                    "properties": {
                        "error": {"const": "invalid_parameter"},
                        "parameter": {"type": "string"},
                    },
                },
            ]
        },
        "NoMatch": {
            "allOf": [
                _ref("schemas", "Error"),
                {
                    "type": "object",
                    "required": ["filters"],
                    "properties": {
                        "error": {"const": "no_match"},
                        "filters": {
                            "type": "object",
                            "required": ["gender", "minimum_age", "maximum_age"],
                            "properties": {
                                "gender": {"type": ["string", "null"]},
                                "minimum_age": {"type": "integer"},
                                "maximum_age": {"type": "integer"},
                            },
                        },
                    },
                },
            ]
        },
        "Stats": {
            "type": "object",
            "required": ["total", "genders", "bands"],
            "properties": {
                "total": {"type": "integer", "minimum": 0},
                "genders": {
                    "type": "object",
                    "required": ["female", "male"],
                    "properties": {
                        "female": {"type": "integer", "minimum": 0},
                        "male": {"type": "integer", "minimum": 0},
                    },
                },
                "bands": {
                    "type": "array",
                    "description": "One row per gender × age band, with the catalog's "
                    "actual share and the curation target's share.",
                    "items": {
                        "type": "object",
                        "required": [
                            "gender",
                            "band",
                            "minimum_age",
                            "maximum_age",
                            "count",
                            "share",
                            "target",
                        ],
                        "properties": {
                            "gender": {"type": "string", "enum": list(GENDER_CHOICES)},
                            "band": {"type": "string"},
                            "minimum_age": {"type": "integer"},
                            "maximum_age": {"type": "integer"},
                            "count": {"type": "integer", "minimum": 0},
                            "share": {"type": "number", "minimum": 0, "maximum": 1},
                            "target": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    },
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"const": "ok"},
                "checks": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                },
            },
        },
    },
    "securitySchemes": {
        "Token": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Authorization: Token <key>` (keys come from `facecat keys "
            "create`). Optional: without it the caller is anon.",
        }
    },
    "responses": {
        "InvalidParameter": _json(
            _ref("schemas", "InvalidParameter"), "A query parameter is invalid; it is named."
        ),
        "NoMatch": _json(
            _ref("schemas", "NoMatch"),
            "No stored face matches and on-demand generation produced none.",
        ),
        "NotFound": _json(_ref("schemas", "Error"), "Not found."),
        "Unavailable": _json(
            _ref("schemas", "Error"), "The database or the image storage is unreachable."
        ),
        "Unauthorized": _json(
            _ref("schemas", "Error"), "The Authorization header names an unknown or revoked key."
        ),
        "Throttled": {
            **_json(_ref("schemas", "Error"), "Over the caller's rate limit."),
            "headers": {
                "Retry-After": {
                    "description": "Seconds until the limit admits the next request.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            },
        },
        "Redirect": {
            "description": "Redirect to the image (absolute URL).",
            "headers": {
                "Location": _ref("headers", "Location"),
                "Cache-Control": _ref("headers", "NoStore"),
            },
        },
    },
}

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
                "200": {
                    "description": "The image.",
                    "headers": {
                        "ETag": {"schema": {"type": "string"}},
                        "Cache-Control": {"schema": {"type": "string"}},
                    },
                    "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        "image/webp": {"schema": {"type": "string", "format": "binary"}},
                        "image/png": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "304": {"description": "Not modified (If-None-Match matched the ETag)."},
                "400": _json(_ref("schemas", "Error"), "The key is not a safe object name."),
                "404": _ref("responses", "NotFound"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/avatar/{identifier}": {
        "get": {
            "summary": "A stable avatar for an identifier",
            "description": "A square image of a catalog face chosen by hashing the "
            "identifier and the filters (rendezvous hashing over the matching faces): the "
            "same face on every call and every server, and when the catalog grows by 10% "
            "about 9% of identifiers change face (only to new faces). "
            "`Cache-Control: public, max-age=FACECAT_AVATAR_MAX_AGE`, a strong ETag, 304 on "
            "`If-None-Match`. Counted against the image-fetch limit.",
            "tags": ["images"],
            "parameters": [
                {
                    "name": "identifier",
                    "in": "path",
                    "required": True,
                    "description": "Any string naming the user (an e-mail, a user id).",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 256},
                },
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
                "200": {
                    "description": "The avatar.",
                    "headers": {
                        "ETag": {"schema": {"type": "string"}},
                        "Cache-Control": {"schema": {"type": "string"}},
                        "X-Face-Id": {
                            "description": "Id of the catalog face shown.",
                            "schema": {"type": "string", "pattern": "^[0-9]+$"},
                        },
                    },
                    "content": {
                        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                        "image/webp": {"schema": {"type": "string", "format": "binary"}},
                    },
                },
                "304": {"description": "Not modified (If-None-Match matched the ETag)."},
                **_pick_errors(),
            },
        }
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


def document(max_random_count: int = 100) -> dict[str, Any]:
    """The OpenAPI document, with limits taken from the running configuration."""
    doc = {
        "openapi": "3.1.0",
        "info": INFO,
        "paths": copy.deepcopy(PATHS),
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
