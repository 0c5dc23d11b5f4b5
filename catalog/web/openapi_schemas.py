"""The shared parts of the OpenAPI document: ``COMPONENTS`` and the builders that refer to them.

The filter parameters, headers, the face object, the error bodies and the common error
responses are defined here once and referenced by ``$ref`` from every operation in
``openapi_paths``. Kept apart from the operations because these pieces are what several
endpoints share, and from ``openapi`` so that module holds only how the document is served.
"""

from __future__ import annotations

from typing import Any

from catalog.web.params import GENDER_CHOICES

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
