"""Every error is JSON with a code and a sentence; CORS everywhere; outages are 503."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from catalog.errors import ApiError
from catalog.sql.db import downgrade, upgrade
from catalog.sql.models import Face
from tests.conftest import _free_port


def assert_json_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == code and isinstance(body["detail"], str) and body["detail"]
    assert b"<html" not in response.data.lower()
    return body


@pytest.mark.parametrize(
    "path", ["/nope", "/face", "/face/jsonx", "/face/json/", "/api/v1/faces", "/img/"]
)
def test_unknown_route_is_json_404(client: FlaskClient, path: str) -> None:
    assert_json_error(client.get(path), 404, "not_found")


@pytest.mark.parametrize("method", ["post", "put", "delete", "patch"])
def test_wrong_method_is_json_405_with_allow(client: FlaskClient, method: str) -> None:
    response = getattr(client, method)("/face/json")
    body = assert_json_error(response, 405, "method_not_allowed")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert body["allowed_methods"] == ["GET", "HEAD", "OPTIONS"]


def test_cors_on_every_kind_of_response(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    face = make_face()
    for response in (
        client.get("/face/json"),
        client.get("/face/view"),
        client.get(f"/img/{face.image_key}"),
        client.get("/face/json?gender=robot"),
        client.get("/nope"),
        client.post("/face/json"),
        client.get("/stats"),
        client.get("/healthz"),
        client.get("/openapi.json"),
    ):
        assert response.headers["Access-Control-Allow-Origin"] == "*", response.request.path


def test_cors_preflight(client: FlaskClient) -> None:
    response = client.options(
        "/face/json",
        headers={"Origin": "https://mockup.example", "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    # Only what the API answers; POST, PUT, PATCH and DELETE would all be 405.
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert methods == {"GET", "HEAD", "OPTIONS"}


def test_api_error_carries_extra_keys_and_headers(app: Flask) -> None:
    @app.get("/boom-api")
    def boom_api() -> None:
        raise ApiError(418, "teapot", "I am a teapot.", headers={"X-Why": "tea"}, flavour="earl")

    response = app.test_client().get("/boom-api")
    body = assert_json_error(response, 418, "teapot")
    assert body["flavour"] == "earl" and response.headers["X-Why"] == "tea"


def test_unexpected_exception_is_json_500_without_internals(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internal detail")

    response = app.test_client().get("/boom")
    assert_json_error(response, 500, "internal_error")
    assert b"secret internal detail" not in response.data
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "secret internal detail" in caplog.text


def test_database_down_is_503(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere"
    app = create_app(
        {"TESTING": True, "DATABASE_URL": url, "STORAGE_URL": (tmp_path / "o").as_uri()}
    )
    client = app.test_client()
    for path in ("/face/json", "/face/view", "/api/v1/faces/random", "/stats"):
        response = client.get(path)
        assert_json_error(response, 503, "database_unavailable")
        assert response.headers["Retry-After"]


@pytest.mark.s3
def test_storage_down_is_503_for_images(
    app_factory: Callable[..., Flask], make_face: Callable[..., Face]
) -> None:
    face = make_face()
    app = app_factory(STORAGE_URL=f"s3://k:s@127.0.0.1:{_free_port()}/bucket?region=us-east-1")
    assert_json_error(app.test_client().get(f"/img/{face.image_key}"), 503, "storage_unavailable")


def test_an_unmigrated_database_is_a_503_that_names_the_fix(
    app_factory: Callable[..., Flask],
) -> None:
    """On the test database (SQLite, then PostgreSQL) taken back to an empty schema:
    SQLite used to call it an outage ("not reachable"), PostgreSQL a 500."""
    app = app_factory()
    downgrade(app)
    try:
        client = app.test_client()
        for path in ("/face/json", "/api/v1/faces/random", "/stats"):
            response = client.get(path)
            assert_json_error(response, 503, "database_not_migrated")
            assert "facecat db upgrade" in response.get_json()["detail"]
    finally:
        upgrade(app)
    assert app.test_client().get("/stats").status_code == 200


def test_a_host_outside_trusted_hosts_is_a_json_400(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(TRUSTED_HOSTS="facecat.test, faces.example.com", SERVER_NAME=None)
    client = app.test_client()
    assert client.get("/stats", headers={"Host": "faces.example.com"}).status_code == 200
    evil = client.get("/face/json", headers={"Host": "evil.example"})
    assert evil.status_code == 400 and evil.is_json
    assert evil.get_json()["error"] == "bad_request"
