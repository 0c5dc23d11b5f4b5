"""/stats (text and JSON, with targets) and /healthz (200, or 503 naming the failure)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from analysis.vocabulary import BANDS
from app import create_app
from catalog.services import find_service
from catalog.sql.db import upgrade
from catalog.sql.models import Face
from catalog.storage import Storage
from ingest.bands import DEFAULT_COMPOSITION
from tests.conftest import _free_port


def test_stats_text_is_fakeface_style(client: FlaskClient, make_face: Callable[..., Face]) -> None:
    assert client.get("/stats").data == b"0 faces\n"
    make_face()
    response = client.get("/stats")
    assert response.mimetype == "text/plain" and response.data == b"1 face\n"
    make_face(gender="male", age=70)
    assert client.get("/stats", headers={"Accept": "*/*"}).data == b"2 faces\n"
    assert "Accept" in response.headers["Vary"]


def test_stats_json_by_parameter_or_accept(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    make_face(gender="female", age=25)
    make_face(gender="female", age=39)
    make_face(gender="male", age=61)
    make_face(gender="male", age=5)
    by_param = client.get("/stats?format=json")
    by_accept = client.get("/stats", headers={"Accept": "application/json"})
    assert by_param.mimetype == by_accept.mimetype == "application/json"
    body = by_param.get_json()
    assert body == by_accept.get_json()
    assert body["total"] == 4
    assert body["genders"] == {"female": 2, "male": 2}
    rows = {(r["gender"], r["band"]): r for r in body["bands"]}
    assert len(rows) == 2 * len(BANDS)
    assert rows[("female", "20-39")]["count"] == 2
    assert rows[("female", "20-39")]["share"] == 0.5
    assert rows[("male", "60+")]["count"] == 1
    assert rows[("male", "0-12")]["minimum_age"] == 0
    assert rows[("male", "0-12")]["maximum_age"] == 12
    assert rows[("male", "20-39")]["target"] == pytest.approx(DEFAULT_COMPOSITION["male:20-39"])
    assert sum(r["target"] for r in body["bands"]) == pytest.approx(1.0, abs=1e-3)
    text = client.get("/stats?format=text", headers={"Accept": "application/json"})
    assert text.data == b"4 faces\n"


def test_stats_target_follows_setting(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(TARGET_COMPOSITION='{"female:20-39": 3, "male:20-39": 1}')
    body = app.test_client().get("/stats?format=json").get_json()
    targets = {(r["gender"], r["band"]): r["target"] for r in body["bands"]}
    assert targets[("female", "20-39")] == 0.75 and targets[("male", "20-39")] == 0.25
    assert targets[("male", "60+")] == 0.0


def test_stats_bad_format(client: FlaskClient) -> None:
    response = client.get("/stats?format=xml")
    assert response.status_code == 400 and response.get_json()["parameter"] == "format"


def test_healthz_ok(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "storage": "ok"}}
    assert response.headers["Cache-Control"] == "no-store"


def test_healthz_503_when_database_is_down(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere"
    app = create_app(
        {"TESTING": True, "DATABASE_URL": url, "STORAGE_URL": (tmp_path / "o").as_uri()}
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "unhealthy" and "database" in body["detail"]
    assert body["checks"] == {"database": "unreachable", "storage": "ok"}


def test_healthz_503_when_sqlite_file_cannot_open(tmp_path: Path) -> None:
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{tmp_path}/missing-dir/x.db",
            "STORAGE_URL": (tmp_path / "o").as_uri(),
        }
    )
    assert app.test_client().get("/healthz").status_code == 503


@pytest.mark.s3
def test_healthz_503_when_storage_is_down(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(STORAGE_URL=f"s3://k:s@127.0.0.1:{_free_port()}/bucket?region=us-east-1")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "storage": "unreachable"}


@pytest.mark.s3
def test_healthz_503_when_the_bucket_is_gone(
    app_factory: Callable[..., Flask], s3_url: str
) -> None:
    app = app_factory(STORAGE_URL=s3_url)
    storage = find_service(Storage, app)
    storage.put("faces/a.jpg", b"\xff\xd8", "image/jpeg")
    assert app.test_client().get("/healthz").status_code == 200
    storage.client.remove_object(storage.bucket, "faces/a.jpg")
    storage.client.remove_bucket(storage.bucket)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "ok", "storage": "bucket_missing"}


def test_healthz_503_when_storage_folder_is_unusable(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    app = app_factory(STORAGE_URL=(tmp_path / "a-file" / "objects").as_uri())
    assert app.test_client().get("/healthz").get_json()["checks"]["storage"] == "unreachable"


def test_healthz_503_when_the_database_is_not_migrated(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    """The database answers but has no tables: every face request would be a 503, so the
    instance is not healthy, and the check says what to run."""
    app = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'unmigrated.db'}")
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    database = response.get_json()["checks"]["database"]
    assert database.startswith("at an empty schema, needs ")
    assert database.endswith("run `facecat db upgrade`")
    upgrade(app)
    assert app.test_client().get("/healthz").status_code == 200


@pytest.mark.redis
def test_healthz_checks_redis_when_limits_are_shared(
    app_factory: Callable[..., Flask], redis_url: str
) -> None:
    ok = app_factory(RATELIMIT_STORAGE_URL=redis_url).test_client().get("/healthz")
    assert ok.status_code == 200
    assert ok.get_json()["checks"] == {"database": "ok", "storage": "ok", "rate_limits": "ok"}
    down = app_factory(
        RATELIMIT_STORAGE_URL=f"redis://127.0.0.1:{_free_port()}/0",
        RATELIMIT_STORAGE_TIMEOUT=0.2,
    )
    response = down.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["rate_limits"] == "unreachable"
    # A lookup still answers: limits are counted per process while Redis is away.
    assert down.test_client().get("/stats").status_code == 200
