"""The README's API tour, run: every ``http://localhost:5000/...`` URL in its examples is
requested from a real app holding faces that match them, and must answer as the README
says (the JSON it shows, a redirect or an image), not with an error.

Only what cannot run here is left out: the seeded-generation and look-alike calls need a
key the README writes as ``fc_...``, so they are checked to be refused as a bad key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from flask import Flask

from catalog.services import find_service
from catalog.sql.db import session_scope
from catalog.storage import Storage
from tests.factories import make_face

README = Path(__file__).resolve().parents[1] / "README.md"
URL = re.compile(r"http://localhost:5000(/[^\s'\"<>]*)")


def readme_urls() -> list[str]:
    """Every path + query the README's code blocks send to localhost:5000."""
    blocks = re.findall(r"```(?:sh|html)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    found: list[str] = []
    for block in blocks:
        for line in block.splitlines():
            if line.lstrip().startswith("#"):
                continue  # a shown answer, not a request
            found += [m for m in URL.findall(line) if m not in found]
    return found


def test_the_readme_has_examples_to_run() -> None:
    assert len(readme_urls()) >= 6


@pytest.fixture
def stocked_app(app: Flask) -> Flask:
    """The app with faces for every filter the README's examples use."""
    with session_scope(app) as session:
        storage = find_service(Storage, app)
        for gender, age in (("female", 34), ("female", 25), ("male", 65), ("male", 40)):
            make_face(session, storage, gender=gender, age=age)
    return app


@pytest.mark.parametrize("path", readme_urls())
def test_each_readme_example_answers_as_shown(stocked_app: Flask, path: str) -> None:
    client = stocked_app.test_client()
    response = client.get(path)
    route = urlsplit(path).path
    if route == "/api/v6/image_editing/face_gen":
        # The README posts a body with a placeholder key: refused as a bad key, after the
        # body itself was read as valid (a bad field would be a 400 first).
        (sent,) = re.findall(r"-d '(\{.*?\})'", README.read_text(encoding="utf-8"), re.S)
        response = client.post(path, json=json.loads(sent))
        assert response.status_code == 401 and response.get_json()["status"] == "error"
        return
    if route.startswith("/api/v1/generate"):
        response = client.get(path, headers={"Authorization": "Token fc_..."})
        assert response.status_code == 401 and response.is_json  # the placeholder key
        return
    if "minimum_age=abc" in path:
        assert response.status_code == 400
        assert response.get_json() == {
            "detail": "minimum_age must be an integer from 0 to 100 (got 'abc').",
            "error": "invalid_parameter",
            "parameter": "minimum_age",
        }
        return
    assert response.status_code in (200, 302), (path, response.get_json(silent=True))
    if route.startswith(("/face/view", "/thumb/view")):
        image = client.get(urlsplit(response.headers["Location"]).path)
        assert image.status_code == 200 and image.mimetype == "image/jpeg"
    elif route.startswith("/avatar"):
        assert response.mimetype.startswith("image/")
    elif route == "/face/json":
        body = response.get_json()
        assert body["gender"] == "female" and 30 <= body["age"] <= 40
        assert body["image_url"].startswith("http://")
    elif route == "/api/v1/faces/random":
        results = response.get_json()["results"]
        assert results and all(face["gender"] == "female" for face in results)
