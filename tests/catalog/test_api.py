"""The face endpoints through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from catalog.services import find_service, install_service
from catalog.sql import db
from catalog.sql.cells import Filters
from catalog.sql.models import Face
from catalog.storage import Storage
from catalog.web.unmet import Supplier
from tests.factories import make_face as factory_make_face

HTTP_DATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} GMT$"
)
FILENAME = re.compile(r"^(male|female)_\d{1,3}_[0-9a-f]{40}\.jpg$")
PICKING_ENDPOINTS = ["/face/json", "/face/view", "/face/view/x.jpg", "/thumb/view", "/thumb/view/1"]
ALL_FILTERED = [*PICKING_ENDPOINTS, "/api/v1/faces/random"]


def times_served(app: Flask, face_id: int) -> int:
    with db.session_scope(app) as session:
        return session.get(Face, face_id).times_served


def test_face_json_has_fakeface_keys_types_and_formats(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    added = make_face(gender="female", age=31, p_female=0.91)
    response = client.get("/face/json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) >= {"age", "gender", "filename", "image_url", "date_added", "last_served"}
    assert set(body) >= {"source", "id", "thumb_url", "width", "height", "gender_confidence"}
    assert body["age"] == 31 and type(body["age"]) is int
    assert body["gender"] == "female"
    assert FILENAME.match(body["filename"]) and body["filename"] == added.filename
    assert body["image_url"] == f"http://facecat.test/img/faces/{added.filename}"
    assert body["thumb_url"] == f"http://facecat.test/img/thumbs/{added.filename}"
    assert HTTP_DATE.match(body["date_added"])
    assert parsedate_to_datetime(body["date_added"]) == added.date_added.replace(microsecond=0)
    assert body["last_served"] is None
    assert body["source"] == "dcgan"
    assert body["id"] == added.id
    assert (body["width"], body["height"]) == (16, 16)
    assert body["gender_confidence"] == pytest.approx(0.91)


def test_gender_confidence_is_for_the_stated_gender(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    make_face(gender="male", age=40, p_female=0.15)
    assert client.get("/face/json").get_json()["gender_confidence"] == pytest.approx(0.85)


def test_last_served_is_the_previous_serving_time(
    app: Flask, client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    served_before = datetime(2020, 8, 2, 22, 8, 56, tzinfo=UTC)
    face = make_face(last_served=served_before, times_served=4)
    first = client.get("/face/json").get_json()
    assert first["last_served"] == "Sun, 02 Aug 2020 22:08:56 GMT"
    second = client.get("/face/json").get_json()
    assert HTTP_DATE.match(second["last_served"])
    assert parsedate_to_datetime(second["last_served"]) > served_before
    assert times_served(app, face.id) == 6


def test_head_answers_without_counting_a_serving(
    app: Flask, client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    face = make_face()
    for path in [*PICKING_ENDPOINTS, "/api/v1/faces/random", f"/api/v1/faces/{face.id}"]:
        response = client.head(path)
        assert response.status_code in (200, 302), path
        assert response.data == b""
    assert client.head("/face/json").headers["Content-Type"] == "application/json"
    assert times_served(app, face.id) == 0


def test_filters_are_applied(client: FlaskClient, make_face: Callable[..., Face]) -> None:
    make_face(gender="female", age=20)
    make_face(gender="male", age=34)
    make_face(gender="male", age=70)
    for _ in range(10):
        body = client.get("/face/json?gender=male&minimum_age=33&maximum_age=34").get_json()
        assert (body["gender"], body["age"]) == ("male", 34)
        body = client.get("/face/json?gender=female").get_json()
        assert body["gender"] == "female"
        assert client.get("/face/json?minimum_age=60").get_json()["age"] == 70


def test_unknown_parameters_are_ignored(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    make_face()
    assert client.get("/face/json?t=1690000000&cachebust=x&GENDER=robot").status_code == 200


BAD_PARAMETERS = [
    ("gender=robot", "gender"),
    ("gender=Male", "gender"),
    ("gender=", "gender"),
    ("minimum_age=abc", "minimum_age"),
    ("minimum_age=-1", "minimum_age"),
    ("minimum_age=101", "minimum_age"),
    ("minimum_age=1.5", "minimum_age"),
    ("minimum_age=", "minimum_age"),
    ("minimum_age=%205", "minimum_age"),
    ("minimum_age=%D9%A3", "minimum_age"),  # an Arabic-Indic digit: int() would accept it
    ("maximum_age=1e2", "maximum_age"),
    ("maximum_age=999999999999999999999", "maximum_age"),
    ("maximum_age=-0", "maximum_age"),
    ("minimum_age=50&maximum_age=40", "minimum_age"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD_PARAMETERS)
def test_bad_parameters_are_400_naming_them(
    client: FlaskClient, make_face: Callable[..., Face], query: str, parameter: str
) -> None:
    make_face()  # a catalog that could answer, so only the parameter can be at fault
    for path in ALL_FILTERED:
        response = client.get(f"{path}?{query}")
        assert response.status_code == 400, path
        body = response.get_json()
        assert body["error"] == "invalid_parameter"
        assert body["parameter"] == parameter
        assert parameter in body["detail"]


def test_equal_minimum_and_maximum_age_is_valid(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    make_face(age=0)
    make_face(age=100)
    assert client.get("/face/json?minimum_age=0&maximum_age=0").get_json()["age"] == 0
    assert client.get("/face/json?minimum_age=100&maximum_age=100").get_json()["age"] == 100


@pytest.fixture
def catalog_only(app_factory: Callable[..., Flask]) -> FlaskClient:
    """A client whose app never generates: an unmet filter is a plain no_match."""
    return app_factory(ONDEMAND_ENABLED=False).test_client()


@pytest.mark.parametrize("path", ALL_FILTERED)
def test_no_match_is_a_json_404_with_the_filters(
    catalog_only: FlaskClient, make_face: Callable[..., Face], path: str
) -> None:
    make_face(gender="male", age=30)
    response = catalog_only.get(f"{path}?gender=female&minimum_age=10&maximum_age=12")
    assert response.status_code == 404
    body = response.get_json()
    assert body["error"] == "no_match"
    assert body["filters"] == {"gender": "female", "minimum_age": 10, "maximum_age": 12}
    assert body["detail"]


def test_empty_catalog_is_no_match(catalog_only: FlaskClient) -> None:
    body = catalog_only.get("/face/json").get_json()
    assert body["error"] == "no_match"
    assert body["filters"] == {"gender": None, "minimum_age": 0, "maximum_age": 100}


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/face/view", "faces/"),
        ("/face/view/1690000000", "faces/"),
        ("/face/view/any/thing/with/slashes.jpg", "faces/"),
        ("/face/view/a%0Ab", "faces/"),  # a newline in the cache buster
        ("/thumb/view/line%0Abreak/x%0D.jpg", "thumbs/"),
        ("/thumb/view", "thumbs/"),
        ("/thumb/view/0.123", "thumbs/"),
    ],
)
def test_views_redirect_uncacheably_to_the_image(
    client: FlaskClient, make_face: Callable[..., Face], path: str, prefix: str
) -> None:
    face = make_face()
    response = client.get(f"{path}?gender=female&t=5")
    assert response.status_code == 302
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Location"] == f"http://facecat.test/img/{prefix}{face.filename}"
    assert response.data == b"" and response.mimetype != "text/html"
    image = client.get(response.headers["Location"])
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert image.data == find_service(Storage, client.application).get(prefix + face.filename)


def test_view_picks_a_new_face_per_request(
    app: Flask, client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    install_service(app, random.Random, random.Random(42))
    for _ in range(4):
        make_face()
    locations = {client.get(f"/face/view/{i}").headers["Location"] for i in range(30)}
    assert len(locations) == 4


def test_public_base_url_is_used_for_image_urls(
    app_factory: Callable[..., Flask], db_session: Session
) -> None:
    app = app_factory(PUBLIC_BASE_URL="https://cdn.example.com/facecat/")
    face = factory_make_face(db_session, find_service(Storage, app))
    client = app.test_client()
    body = client.get("/face/json").get_json()
    assert body["image_url"] == f"https://cdn.example.com/facecat/faces/{face.filename}"
    assert body["thumb_url"] == f"https://cdn.example.com/facecat/thumbs/{face.filename}"
    location = client.get("/thumb/view").headers["Location"]
    assert location == f"https://cdn.example.com/facecat/thumbs/{face.filename}"


@pytest.mark.s3
def test_s3_backed_catalog_serves_images(
    app_factory: Callable[..., Flask], db_session: Session, s3_url: str
) -> None:
    app = app_factory(STORAGE_URL=s3_url)
    face = factory_make_face(db_session, find_service(Storage, app))
    client = app.test_client()
    location = client.get("/face/view").headers["Location"]
    image = client.get(location)
    assert image.status_code == 200 and image.mimetype == "image/jpeg"
    assert image.data == find_service(Storage, app).get(face.image_key)


# --- /api/v1 ----------------------------------------------------------------------------


def test_random_returns_count_distinct_faces(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    for age in range(20, 26):
        make_face(age=age)
    results = client.get("/api/v1/faces/random?count=4").get_json()["results"]
    assert len(results) == 4 and len({r["id"] for r in results}) == 4
    assert all(FILENAME.match(r["filename"]) for r in results)
    one = client.get("/api/v1/faces/random").get_json()["results"]
    assert len(one) == 1


def test_random_returns_what_exists_when_fewer_match(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    make_face(gender="male", age=50)
    make_face(gender="male", age=51)
    make_face(gender="female", age=51)
    results = client.get("/api/v1/faces/random?count=100&gender=male").get_json()["results"]
    assert sorted(r["age"] for r in results) == [50, 51]


def test_random_count_is_limited_by_setting(
    app_factory: Callable[..., Flask], db_session: Session
) -> None:
    client = app_factory(MAX_RANDOM_COUNT=3).test_client()
    response = client.get("/api/v1/faces/random?count=4")
    assert response.status_code == 400
    assert response.get_json()["parameter"] == "count"
    assert "1 to 3" in response.get_json()["detail"]
    doc = client.get("/openapi.json").get_json()
    count = doc["paths"]["/api/v1/faces/random"]["get"]["parameters"][0]
    assert count["name"] == "count" and count["schema"]["maximum"] == 3


@pytest.mark.parametrize("count", ["0", "101", "x", "", "-3"])
def test_random_bad_count(client: FlaskClient, count: str) -> None:
    response = client.get(f"/api/v1/faces/random?count={count}")
    assert response.status_code == 400
    assert response.get_json()["parameter"] == "count"


def test_random_counts_every_returned_face_as_served(
    app: Flask, client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    faces = [make_face(age=a) for a in (30, 31, 32)]
    client.get("/api/v1/faces/random?count=3")
    assert [times_served(app, f.id) for f in faces] == [1, 1, 1]


def test_face_by_id(app: Flask, client: FlaskClient, make_face: Callable[..., Face]) -> None:
    face = make_face(gender="male", age=44)
    body = client.get(f"/api/v1/faces/{face.id}").get_json()
    assert (body["id"], body["age"], body["gender"]) == (face.id, 44, "male")
    assert body["filename"] == face.filename
    assert times_served(app, face.id) == 0


@pytest.mark.parametrize("face_id", ["12345", "0", "99999999999999999999", "-1", "abc"])
def test_unknown_face_id_is_json_404(client: FlaskClient, face_id: str) -> None:
    response = client.get(f"/api/v1/faces/{face_id}")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


# --- the on-demand hook -----------------------------------------------------------------


@pytest.mark.parametrize("path", ALL_FILTERED)
def test_unmet_filter_goes_through_the_supplier(
    app: Flask, client: FlaskClient, db_session: Session, path: str
) -> None:
    asked: list[Filters] = []

    def supplier(filters: Filters) -> Face:
        asked.append(filters)
        return factory_make_face(db_session, find_service(Storage, app), gender="female", age=90)

    install_service(app, Supplier, supplier)
    response = client.get(f"{path}?gender=female&minimum_age=85&maximum_age=95")
    assert response.status_code in (200, 302)
    assert asked == [Filters("female", 85, 95)]
    if response.status_code == 302:
        assert "/female_90_" in response.headers["Location"]
    else:
        body = response.get_json()
        face = body["results"][0] if "results" in body else body
        assert (face["gender"], face["age"]) == ("female", 90)


def test_supplier_is_not_asked_when_a_face_is_stored(
    app: Flask, client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    make_face()
    install_service(app, Supplier, lambda filters: pytest.fail("supplier called"))
    assert client.get("/face/json").status_code == 200


def test_supplier_returning_none_gives_no_match(app: Flask, client: FlaskClient) -> None:
    install_service(app, Supplier, lambda filters: None)
    body = client.get("/face/json?gender=male").get_json()
    assert body["error"] == "no_match" and "time budget" in body["detail"]


def test_ondemand_disabled_skips_the_supplier(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(ONDEMAND_ENABLED=False)
    install_service(app, Supplier, lambda filters: pytest.fail("supplier called"))
    assert app.test_client().get("/face/json").status_code == 404


@pytest.mark.parametrize("path", ["/face/json", "/api/v1/faces/random?count=2"])
def test_random_picks_are_not_cacheable(
    client: FlaskClient, make_face: Callable[..., Face], path: str
) -> None:
    make_face()
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
