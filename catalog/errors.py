"""JSON errors for every 4xx and 5xx, and CORS on every response.

DESIGN.md's contract: ``{"error": "<code>", "detail": "<sentence>", ...}`` with the
right status, never an HTML page, never a 500 for bad input. Views raise ``ApiError``;
Werkzeug's own exceptions (unknown route, wrong method) and unexpected errors go through
the same handlers, so clients parse one shape whatever went wrong.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, jsonify
from flask_cors import CORS
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError
from werkzeug.exceptions import HTTPException, InternalServerError

from catalog.storage import StorageError

logger = logging.getLogger(__name__)

# Werkzeug's status names are prose ("Method Not Allowed"); clients want stable codes.
_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "throttled",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}


class ApiError(Exception):
    """An error a view reports to the client: status, stable code, sentence, extra keys.

    ``ApiError(400, "invalid_parameter", "gender must be male or female", parameter="gender")``
    becomes ``400 {"error": "invalid_parameter", "detail": "...", "parameter": "gender"}``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def to_dict(self) -> dict[str, Any]:
        """The JSON body."""
        return {"error": self.code, "detail": self.detail, **self.extra}


def error_response(error: ApiError) -> Response:
    """Render an ApiError as a JSON response."""
    response = jsonify(error.to_dict())
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def _handle_api_error(error: ApiError) -> Response:
    return error_response(error)


def _handle_http_exception(exc: HTTPException) -> Response:
    """Werkzeug's exceptions (404 unknown route, 405, 413 …) as JSON, keeping their headers."""
    status = exc.code or 500
    headers = {
        key: value
        for key, value in exc.get_headers()
        if key.lower() not in ("content-type", "content-length")
    }
    detail = exc.description or exc.name or "error"
    extra: dict[str, Any] = {}
    valid = getattr(exc, "valid_methods", None)
    if status == 405 and valid:
        extra["allowed_methods"] = sorted(valid)
    error = ApiError(status, _CODES.get(status, f"http_{status}"), detail, headers=headers, **extra)
    return error_response(error)


# What drivers say when a table or column the code needs does not exist: SQLite's
# messages, PostgreSQL's SQLSTATEs undefined_table and undefined_column.
_MISSING_SCHEMA_MESSAGES = ("no such table", "no such column")
_MISSING_SCHEMA_SQLSTATES = ("42P01", "42703")


def _schema_is_behind(exc: DBAPIError) -> bool:
    """Whether ``exc`` is a missing table or column on a database not migrated to head.

    Only such errors are checked, so a database that is down costs no second connection.
    """
    missing = getattr(exc.orig, "pgcode", None) in _MISSING_SCHEMA_SQLSTATES or any(
        text in str(exc.orig) for text in _MISSING_SCHEMA_MESSAGES
    )
    if not missing:
        return False
    from catalog.sql.db import schema_behind_hint

    return schema_behind_hint(current_app) is not None


def _handle_database_error(exc: DBAPIError) -> Response:
    """Lost or refused connections are an outage, not a bug: 503 and retry. A schema
    nobody migrated is a 503 too, but one a retry will not fix, so it says what will
    (SQLite reported it as an outage; PostgreSQL as a 500)."""
    if _schema_is_behind(exc):
        logger.error("database schema is behind this code (run `facecat db upgrade`): %s", exc.orig)
        return error_response(
            ApiError(
                503,
                "database_not_migrated",
                "The database schema is older than this version of facecat; the operator "
                "must run `facecat db upgrade`.",
                headers={"Retry-After": "60"},
            )
        )
    if not isinstance(exc, OperationalError):
        return _handle_unexpected(exc)
    logger.error("database unavailable: %s", exc.orig)
    return error_response(
        ApiError(
            503,
            "database_unavailable",
            "The database is not reachable; try again shortly.",
            headers={"Retry-After": "10"},
        )
    )


def _handle_storage_down(exc: StorageError) -> Response:
    """Storage failures other than a missing object (views map that to 404) are a 503."""
    logger.error("storage unavailable: %s", exc)
    return error_response(
        ApiError(
            503,
            "storage_unavailable",
            "Image storage is not reachable; try again shortly.",
            headers={"Retry-After": "10"},
        )
    )


def _handle_unexpected(exc: Exception) -> Response:
    """Anything else is our bug: log the traceback, tell the client nothing internal."""
    if isinstance(exc, HTTPException):
        return _handle_http_exception(exc)
    logger.exception("unhandled error", exc_info=exc)
    return error_response(
        ApiError(500, "internal_error", InternalServerError.description or "Internal error.")
    )


def init_app(app: Flask) -> None:
    """Register the JSON error handlers and CORS (``Access-Control-Allow-Origin: *``)."""
    app.register_error_handler(ApiError, _handle_api_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(OperationalError, _handle_database_error)
    app.register_error_handler(ProgrammingError, _handle_database_error)
    app.register_error_handler(StorageError, _handle_storage_down)
    app.register_error_handler(Exception, _handle_unexpected)
    # Public, credential-free API: a wildcard origin is what <img>/fetch users need, and
    # without supports_credentials Flask-CORS sends exactly "*". expose_headers lets
    # browser code read the validators and the rate-limit headers added by later issues.
    # Only the methods the API answers: a preflight that advertised POST or DELETE would
    # promise what every route refuses with 405.
    CORS(
        app,
        origins="*",
        send_wildcard=True,
        methods=["GET", "HEAD", "OPTIONS"],
        expose_headers=[
            "ETag",
            "Retry-After",
            "X-User-Class",
            "Location",
            "X-Face-Age",
            "X-Face-Gender",
            "X-Face-Seed",
            "X-Face-Id",
        ],
    )
