"""The look-alike operations (ModelsLab's face_gen and fetch) in the OpenAPI document.

Kept apart from ``openapi_paths``: their bodies are ModelsLab's, not facecat's query
parameters, and they would double that module.
"""

from __future__ import annotations

from typing import Any

from catalog.web.facegen_body import DEFAULT_SIZE, MAX_SIZE, MIN_SIZE, STEPS
from catalog.web.openapi_schemas import _json, _ref

_INT_OR_STRING = {"type": ["integer", "string"]}
_NUMBER_OR_STRING = {"type": ["number", "string"]}
_FLAG = {"type": ["boolean", "string"], "description": 'true/false or "yes"/"no".'}

REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["face_image"],
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string", "description": "The API key (or send the Authorization header)."},
        "face_image": {
            "type": "string",
            "description": "The photo: `data:image/...;base64,...` (or bare base64 with "
            "`base64: true`), or an http(s) URL when the server allows URL fetches.",
        },
        "prompt": {
            "type": "string",
            "maxLength": 1000,
            "description": "Words from facecat's small vocabulary (an age such as `at 60`, "
            "`older`, `younger`, a gender); the words it did not use come back in "
            "`meta.unused_words`.",
        },
        "negative_prompt": {"type": "string", "maxLength": 1000},
        "width": {
            **_INT_OR_STRING,
            "description": f"{MIN_SIZE}..{MAX_SIZE}, default {DEFAULT_SIZE}.",
        },
        "height": {**_INT_OR_STRING, "description": "Must equal width (square portraits)."},
        "samples": {
            **_INT_OR_STRING,
            "description": "1..4 look-alikes, each charged as a generation.",
        },
        "num_inference_steps": {**_INT_OR_STRING, "description": f"One of {STEPS}."},
        "guidance_scale": {**_NUMBER_OR_STRING, "description": "1..20; not used (no text model)."},
        "s_scale": {
            **_NUMBER_OR_STRING,
            "description": "0..2: how much of the input's face the outputs keep (default 1).",
        },
        "seed": {"type": ["integer", "string", "null"], "description": "Fixes the samples."},
        "style": {"type": "string", "enum": ["realistic"]},
        "safety_checker": _FLAG,
        "base64": {**_FLAG, "description": "Photo in as base64, outputs out as base64."},
        "webhook": {
            "type": ["string", "null"],
            "description": "http(s) URL posted the final body.",
        },
        "track_id": {
            "type": ["string", "integer", "null"],
            "description": "Echoed to the webhook.",
        },
    },
}

RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "status": {"type": "string", "enum": ["success", "processing", "error"]},
        "id": {"type": "string"},
        "generationTime": {"type": "number"},
        "eta": {"type": "number", "description": "Seconds until the job is likely done."},
        "fetch_result": {"type": "string"},
        "output": {"type": "array", "items": {"type": "string"}},
        "proxy_links": {"type": "array", "items": {"type": "string"}},
        "future_links": {"type": "array", "items": {"type": "string"}},
        "meta": {"type": "object"},
        "message": {"type": "string"},
        "track_id": {"type": "string"},
    },
}

_ERROR = _ref("schemas", "Error")
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "The id face_gen answered with.",
    "schema": {"type": "string"},
}


def _fetch_operation(method: str) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": "A look-alike job's result",
        "description": "The job's body now: `success` with outputs, `processing` with an "
        "eta, or `error`; 410 once its outputs expired. Jobs submitted with a key need "
        "the same key.",
        "tags": ["look-alikes"],
        "parameters": [_JOB_ID],
        "responses": {
            "200": _json(RESULT, "The job's result or progress."),
            "401": _ref("responses", "Unauthorized"),
            "404": _json(_ERROR, "No such job for this key."),
            "410": _json(_ERROR, "The job's outputs expired."),
            "503": _ref("responses", "Unavailable"),
        },
    }
    if method == "post":
        operation["requestBody"] = {
            "required": False,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return operation


FACEGEN_PATHS: dict[str, Any] = {
    "/api/v6/image_editing/face_gen": {
        "post": {
            "summary": "Look-alikes of an uploaded face (ModelsLab face_gen)",
            "description": "Checks the body, the key (`FACEGEN_MIN_CLASS`) and the photo "
            "(an image with exactly one face), charges one generation per sample, queues "
            "a job and waits up to `FACEGEN_WAIT_SECONDS` for it; otherwise answers "
            "`processing` with an eta and `fetch_result`. Outputs expire after "
            "`FACEGEN_TTL_SECONDS`.",
            "tags": ["look-alikes"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": REQUEST}},
            },
            "responses": {
                "200": _json(RESULT, "The job's result, or processing."),
                "400": _json(_ERROR, "A field, the photo or its face is refused; it is named."),
                "401": _json(_ERROR, "No key, or an unknown one."),
                "403": _json(_ERROR, "The key's class is below FACEGEN_MIN_CLASS."),
                "429": _ref("responses", "Throttled"),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
    "/api/v6/image_editing/fetch/{job_id}": {
        "post": _fetch_operation("post"),
        "get": _fetch_operation("get"),
    },
    "/facegen/{job_id}/{index}.jpg": {
        "get": {
            "summary": "One look-alike output",
            "description": "The image until the job's outputs expire, then 410.",
            "tags": ["look-alikes"],
            "parameters": [
                _JOB_ID,
                {
                    "name": "index",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
            ],
            "responses": {
                "200": {
                    "description": "The JPEG.",
                    "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}},
                },
                "404": _json(_ERROR, "No such output."),
                "410": _json(_ERROR, "The output expired."),
                "503": _ref("responses", "Unavailable"),
            },
        }
    },
}
