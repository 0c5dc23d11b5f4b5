"""The server-rendered parts of the web page at ``/`` and ``/docs`` (Flask's test client).

What a browser does with them (scripts, copying, Swagger UI) is in tests/browser/.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from catalog.sql.models import Face
from catalog.web import page

REPO = Path(__file__).resolve().parents[2]
CARD = re.compile(r'<li class="face" data-gender="(female|male)" data-age="(\d+)">')


def cards(html: str) -> list[tuple[str, int]]:
    return [(gender, int(age)) for gender, age in CARD.findall(html)]


def test_gallery_shows_only_faces_matching_the_filters(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    for gender, age in [("female", 25), ("female", 70), ("male", 40), ("male", 65)]:
        make_face(gender=gender, age=age)
    response = client.get("/?gender=male&minimum_age=60&maximum_age=")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert cards(html) == [("male", 65)]
    assert 'alt="Generated face: male, age 65"' in html
    assert "/face/view?gender=male&amp;minimum_age=60" in html
    # Empty form fields mean no bound: every face, youngest first.
    everything = client.get("/?gender=&minimum_age=&maximum_age=")
    assert cards(everything.get_data(as_text=True)) == [
        ("female", 25),
        ("male", 40),
        ("male", 65),
        ("female", 70),
    ]


def test_gallery_shows_at_most_24_faces(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    for age in range(30):
        make_face(gender="female", age=age)
    html = client.get("/").get_data(as_text=True)
    assert len(cards(html)) == page.GALLERY_SIZE == 24
    assert "a random 24 of those stored" in html


def test_empty_catalog_says_so_and_generates_nothing(
    app: Flask, client: FlaskClient, db_session: Session, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from catalog.web import unmet

    def refuse(filters: object) -> None:
        raise AssertionError("browsing must not generate faces")

    monkeypatch.setattr(unmet, "supply_unmet", refuse)
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert cards(html) == []
    assert "No stored face matches these filters yet" in html
    assert "generates one on demand" in html
    assert db_session.scalar(select(func.count()).select_from(Face)) == 0


def test_showing_faces_does_not_count_as_serving_them(
    client: FlaskClient, make_face: Callable[..., Face], db_session: Session
) -> None:
    face = make_face(gender="female", age=30)
    assert client.get("/").status_code == 200
    db_session.expire_all()
    assert db_session.get(Face, face.id).times_served == 0


def test_coverage_shows_the_counts_of_stats(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    for gender, age in [("female", 5), ("female", 30), ("female", 33), ("male", 61)]:
        make_face(gender=gender, age=age)
    html = client.get("/").get_data(as_text=True)
    stats = client.get("/stats?format=json").get_json()
    shown = {
        (gender, band): int(count)
        for gender, band, count in re.findall(
            r'<tr data-gender="(\w+)" data-band="([\w+-]+)">.*?data-count="(\d+)"', html, re.S
        )
    }
    assert shown == {(row["gender"], row["band"]): row["count"] for row in stats["bands"]}
    assert f'id="coverage-total">{stats["total"]}<' in html
    for row in stats["bands"]:  # the numbers are text, not only bar lengths
        assert f"{row['target'] * 100:.1f}%" in html


def test_bad_filters_are_the_usual_400_json(client: FlaskClient) -> None:
    for query, parameter in [
        ("minimum_age=abc", "minimum_age"),
        ("maximum_age=101", "maximum_age"),
        ("gender=other", "gender"),
        ("minimum_age=50&maximum_age=40", "minimum_age"),
    ]:
        response = client.get(f"/?{query}")
        assert response.status_code == 400, query
        body = response.get_json()
        assert body["error"] == "invalid_parameter" and body["parameter"] == parameter


def test_page_counts_as_a_lookup(app_factory: Callable[..., Flask]) -> None:
    client = app_factory(RATELIMIT_LOOKUPS="2/minute").test_client()
    assert [client.get("/").status_code for _ in range(2)] == [200, 200]
    refused = client.get("/")
    assert refused.status_code == 429 and refused.get_json()["budget"] == "lookups"
    assert client.get("/docs").status_code == 200  # no database, no lookup limit


def test_only_this_origin_is_allowed_and_nothing_comes_from_elsewhere(
    app_factory: Callable[..., Flask],
) -> None:
    client = app_factory().test_client()
    for path in ("/", "/docs", "/static/page.js"):
        response = client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "unsafe-inline" not in policy, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/", "/docs"):
        html = client.get(path).get_data(as_text=True)
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], "no inline scripts"
        assert re.findall(r'(?:src|href)="https?://(?!facecat\.test)', html) == [], "no CDN"
    public = app_factory(PUBLIC_BASE_URL="https://cdn.example.com/faces").test_client()
    assert (
        "img-src 'self' data: blob: https://cdn.example.com"
        in public.get("/").headers["Content-Security-Policy"]
    )


def test_swagger_ui_is_served_from_the_installed_package(client: FlaskClient) -> None:
    html = client.get("/docs").get_data(as_text=True)
    assert 'src="/docs/assets/swagger-ui-bundle.js"' in html
    assert 'data-spec-url="/openapi.json"' in html
    bundle = client.get("/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and bundle.mimetype == "text/javascript"
    assert bundle.data == (page.SWAGGER_DIST / "swagger-ui-bundle.js").read_bytes()
    missing = client.get("/docs/assets/index.html")
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert client.get("/static/../page.py").status_code == 404


def test_templates_and_static_files_ship_with_the_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["catalog"]
    deps = " ".join(config["project"]["dependencies"])
    assert "flask-swagger-ui" in deps
    web = REPO / "catalog" / "web"
    shipped = [*(web / "templates").iterdir(), *(web / "static").iterdir()]
    assert shipped
    for path in shipped:
        relative = path.relative_to(REPO / "catalog").as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative


def test_api_doc_describes_the_page() -> None:
    from catalog.web.openapi_page import PAGE_PATHS

    doc = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    assert "## Web page" in doc
    for path in PAGE_PATHS:
        assert path.split("{")[0] in doc, path
