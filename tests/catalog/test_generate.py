"""``/api/v1/generate``: parameters, plan gating, budget, determinism, headers, model loading.

Most tests run the real ``ingest.seeded`` code on a small randomly initialised
MobileStyleGAN (a real weights file with its checksum, made here), directions fitted on
made-up labels and a fake estimator, so they need no fetched weights;
``test_real_weights_*`` use the fetched photoreal weights and the shipped directions.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from catalog.services import install_service
from catalog.web import generate
from ingest.seeded import SeededStudio, StudioModels
from tests.catalog import studio_fakes
from tests.conftest import CI


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small random MobileStyleGAN saved as a weights file, and its sha256."""
    return studio_fakes.random_weights(tmp_path_factory.mktemp("weights"))


fake_studio = studio_fakes.random_studio


@pytest.fixture
def app(app_factory: Callable[..., Flask], random_weights: tuple[Path, str]) -> Flask:
    app = app_factory()
    install_service(app, generate.Studio, fake_studio(random_weights))
    return app


def make_key(app: Flask, user_class: str) -> dict[str, str]:
    result = app.test_cli_runner().invoke(
        args=[
            "keys",
            "create",
            "--owner",
            f"{user_class}{os.urandom(4).hex()}@example.com",
            "--name",
            "gen",
            "--class",
            user_class,
        ]
    )
    assert result.exit_code == 0, result.output
    return {"Authorization": f"Token {result.output.strip().splitlines()[-1]}"}


def test_anon_gets_one_image_then_429(client: FlaskClient) -> None:
    response = client.get("/api/v1/generate?gender=female&age=30")
    assert response.status_code == 200
    assert response.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(response.data)).size == (256, 256)
    assert response.headers["X-Face-Gender"] in ("male", "female")
    assert 0 <= int(response.headers["X-Face-Age"]) <= 255
    assert response.headers["X-User-Class"] == "anon"
    assert response.headers["Cache-Control"] == "no-store"
    again = client.get("/api/v1/generate")
    assert again.status_code == 429
    assert again.get_json()["error"] == "throttled"
    assert int(again.headers["Retry-After"]) >= 59


@pytest.mark.parametrize(
    "query, parameter",
    [
        ("gender=other", "gender"),
        ("age=101", "age"),
        ("age=-1", "age"),
        ("age=x", "age"),
        ("seed=0", "seed"),
        ("seed=4294967297", "seed"),
        ("seed=1.5", "seed"),
        ("resolution=63", "resolution"),
        ("resolution=1025", "resolution"),
        ("image_format=png", "image_format"),
    ],
)
def test_invalid_parameters_are_400_and_cost_nothing(
    client: FlaskClient, query: str, parameter: str
) -> None:
    response = client.get(f"/api/v1/generate?{query}")
    assert response.status_code == 400
    assert response.get_json()["parameter"] == parameter
    assert client.get("/api/v1/generate").status_code == 200  # the budget is untouched


@pytest.mark.parametrize("user_class, status", [("basic", 403), ("professional", 200)])
def test_seed_needs_professional_or_above(
    app: Flask, client: FlaskClient, user_class: str, status: int
) -> None:
    response = client.get("/api/v1/generate?seed=7", headers=make_key(app, user_class))
    assert response.status_code == status
    if status == 403:
        body = response.get_json()
        assert body["error"] == "forbidden" and body["required_class"] == "professional"


def test_anon_seed_is_403_json(client: FlaskClient) -> None:
    response = client.get("/api/v1/generate?seed=7")
    assert response.status_code == 403
    assert response.get_json()["user_class"] == "anon"


def test_same_parameters_give_identical_bytes(app: Flask, client: FlaskClient) -> None:
    headers = make_key(app, "enterprise")
    query = "/api/v1/generate?seed=123456&gender=male&age=40&resolution=96&image_format=webp"
    first = client.get(query, headers=headers)
    assert first.status_code == 200 and first.mimetype == "image/webp"
    assert Image.open(io.BytesIO(first.data)).size == (96, 96)
    assert first.headers["X-Face-Seed"] == "123456"
    assert "private" in first.headers["Cache-Control"]
    assert client.get(query, headers=headers).data == first.data
    older = client.get(query.replace("age=40", "age=70"), headers=headers)
    assert older.data != first.data  # the age edit changes the picture
    seed_only = "/api/v1/generate?seed=99&resolution=64"
    assert (
        client.get(seed_only, headers=headers).data == client.get(seed_only, headers=headers).data
    )


def test_missing_models_are_503_and_cost_nothing(app_factory: Callable[..., Flask]) -> None:
    app = app_factory()

    def broken() -> StudioModels:
        raise RuntimeError("no style directions fitted for the photoreal generator")

    install_service(app, generate.Studio, SeededStudio(broken))
    client = app.test_client()
    response = client.get("/api/v1/generate")
    assert response.status_code == 503
    assert response.get_json()["error"] == "generator_unavailable"
    with app.test_request_context():
        from catalog.access.budgets import generation_budget

        assert [remaining for _, remaining in generation_budget()] == [1, 60]


def test_models_load_once_under_concurrent_first_requests(
    random_weights: tuple[Path, str],
) -> None:
    loads: list[int] = []
    studio = fake_studio(random_weights, loads)
    threads = [threading.Thread(target=lambda: studio.models) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [1]


# --- the committed weights ---------------------------------------------------------------


def real_studio() -> SeededStudio:
    """The fetched photoreal weights, the shipped directions and the real estimator."""
    from ingest.seeded import load_studio_models
    from tests.ingest.conftest import REPO_ROOT

    models_dir = os.environ.get("FACECAT_MODELS_DIR") or REPO_ROOT / "instance" / "models"
    if not (Path(models_dir) / "mobilestylegan" / "SynthesisNetwork.bin").is_file():
        message = f"photoreal weights are not in {models_dir}: run `facecat models fetch`"
        if CI:
            pytest.fail(message)
        pytest.skip(message)
    config = {
        "TORCH_THREADS": 0,
        "MODELS_DIR": models_dir,
        "DEVICE": "cpu",
        "TRUNCATION": 0.7,
        "ESTIMATOR": "faceapi",
    }
    return SeededStudio(lambda: load_studio_models(config))


@pytest.mark.model
def test_real_weights_are_deterministic_and_keep_identity_across_ages() -> None:
    from analysis.recognition import FaceDescriptorNet, face_descriptors
    from tests.ingest.conftest import REPO_ROOT

    studio = real_studio()
    first = studio.render(2024, gender="female", age=30, resolution=128)
    assert studio.render(2024, gender="female", age=30, resolution=128).data == first.data
    assert 0 <= first.estimated_age <= 100 and 0 <= first.estimated_p_female <= 1
    models_dir = os.environ.get("FACECAT_MODELS_DIR") or REPO_ROOT / "instance" / "models"
    descriptor = FaceDescriptorNet.from_models_dir(models_dir, device="cpu")

    def identity(seed: int, age: int) -> np.ndarray:
        face = studio.render(seed, gender="male", age=age, resolution=256)
        pixels = np.asarray(Image.open(io.BytesIO(face.data)).convert("RGB"))
        crops = studio.models.generator.analysis_view(pixels[None]).crops
        return face_descriptors(descriptor, crops)[0].numpy()

    # One seed at 25 and at 55 is one person (dlib's threshold is 0.6); two seeds are not.
    young, old, other = identity(11, 25), identity(11, 55), identity(12, 25)
    assert np.linalg.norm(young - old) < 0.6 < np.linalg.norm(young - other)


def test_head_renders_nothing_and_costs_nothing(app: Flask, client: FlaskClient) -> None:
    for _ in range(5):
        head = client.head("/api/v1/generate?gender=female&age=30&image_format=webp")
        assert head.status_code == 200 and head.mimetype == "image/webp"
        assert head.data == b"" and "X-Face-Age" not in head.headers
    assert client.head("/api/v1/generate?age=101").status_code == 400
    assert client.head("/api/v1/generate?seed=7").status_code == 403  # as a GET would
    with app.test_request_context():
        from catalog.access.budgets import generation_budget

        assert [remaining for _, remaining in generation_budget()] == [1, 60]
    assert client.get("/api/v1/generate").status_code == 200  # anon's one generation
