"""/img/<key>: bytes, content type, ETag, immutable caching, 304, traversal rejected."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from catalog.services import find_service
from catalog.sql.models import Face
from catalog.storage import Storage


def test_image_has_etag_and_immutable_caching(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    face = make_face()
    response = client.get(f"/img/{face.image_key}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    assert response.data[:2] == b"\xff\xd8"
    assert response.headers["ETag"].startswith('"')  # strong validator
    cache = response.cache_control
    assert cache.public and cache.max_age == 31536000 and cache.immutable
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_if_none_match_gives_304(client: FlaskClient, make_face: Callable[..., Face]) -> None:
    face = make_face()
    etag = client.get(f"/img/{face.thumb_key}").headers["ETag"]
    again = client.get(f"/img/{face.thumb_key}", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == etag
    assert again.cache_control.immutable
    other = client.get(f"/img/{face.thumb_key}", headers={"If-None-Match": '"nope"'})
    assert other.status_code == 200


def test_different_images_have_different_etags(
    client: FlaskClient, make_face: Callable[..., Face]
) -> None:
    face = make_face()
    etags = {client.get(f"/img/{key}").headers["ETag"] for key in (face.image_key, face.thumb_key)}
    assert len(etags) == 2


def test_head_on_image(client: FlaskClient, make_face: Callable[..., Face]) -> None:
    face = make_face()
    response = client.head(f"/img/{face.image_key}")
    assert response.status_code == 200 and response.data == b""
    assert response.headers["ETag"] and response.headers["Content-Type"] == "image/jpeg"


def test_webp_content_type(app: Flask, client: FlaskClient) -> None:
    find_service(Storage, app).put("faces/x.webp", b"RIFF\x00\x00\x00\x00WEBP", "image/webp")
    assert client.get("/img/faces/x.webp").headers["Content-Type"] == "image/webp"


def test_missing_image_is_json_404(client: FlaskClient) -> None:
    response = client.get("/img/faces/female_20_" + "0" * 40 + ".jpg")
    assert response.status_code == 404
    assert response.get_json()["error"] == "not_found"


def test_only_faces_and_thumbs_are_served(app: Flask, client: FlaskClient) -> None:
    find_service(Storage, app).put("private/secret.jpg", b"TOP SECRET", "image/jpeg")
    response = client.get("/img/private/secret.jpg")
    assert response.status_code == 404 and b"TOP SECRET" not in response.data


@pytest.mark.parametrize(
    "path",
    [
        "/img/faces/../../../etc/passwd",
        "/img/faces/..%2F..%2F..%2Fetc%2Fpasswd",
        "/img/faces/%2e%2e/%2e%2e/etc/passwd",
        "/img/faces/..%5C..%5Cetc%5Cpasswd",
        "/img/faces//etc/passwd",
        "/img/%2Fetc%2Fpasswd",
        "/img/faces/.hidden.jpg",
        "/img/thumbs/../objects.db",
        "/img//etc/passwd",
    ],
)
def test_path_traversal_is_rejected(app: Flask, client: FlaskClient, path: str) -> None:
    # A file right outside the storage root that a traversal would reach.
    objects = find_service(Storage, app).root
    objects.mkdir(parents=True, exist_ok=True)
    (objects.parent / "objects.db").write_bytes(b"TOP SECRET")
    response = client.get(path)
    assert response.status_code in (400, 404)
    assert response.mimetype == "application/json"
    assert b"TOP SECRET" not in response.data and b"root:" not in response.data
