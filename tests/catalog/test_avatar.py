"""``/avatar/<identifier>`` and ``/avatar?u=``: a face derived from the identifier.

Most tests run the real ``ingest.seeded`` code on the small random MobileStyleGAN of
``tests.catalog.studio_fakes`` (no fetched weights, milliseconds per face);
``test_real_weights_*`` render with the fetched photoreal weights.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from catalog.services import find_service, install_service
from catalog.sql.cells import Filters
from catalog.sql.models import Face
from catalog.storage import Storage, StorageError
from catalog.web import avatar, generate
from ingest.seeded import SeededStudio, StudioModels
from tests.catalog import studio_fakes
from tests.conftest import REPO_ROOT_MODELS


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return studio_fakes.random_weights(tmp_path_factory.mktemp("weights"))


class CountingStudio:
    """The small random studio, counting the portraits it renders."""

    def __init__(self, studio: SeededStudio) -> None:
        self.studio = studio
        self.portraits: list[dict[str, Any]] = []

    @property
    def models(self) -> StudioModels:
        return self.studio.models

    def render(self, seed: int, **options: Any) -> Any:
        return self.studio.render(seed, **options)

    def portrait(self, seed: int, **options: Any) -> bytes:
        self.portraits.append({"seed": seed, **options})
        return self.studio.portrait(seed, **options)


@pytest.fixture
def studio(random_weights: tuple[Path, str]) -> CountingStudio:
    return CountingStudio(studio_fakes.random_studio(random_weights))


@pytest.fixture
def make_app(app_factory: Callable[..., Flask], studio: CountingStudio) -> Callable[..., Flask]:
    def make(**settings: Any) -> Flask:
        app = app_factory(**settings)
        install_service(app, generate.Studio, studio)
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def kept_renders(app: Flask) -> list[str]:
    return list(find_service(Storage, app).keys(avatar.AVATARS_PREFIX))


# --- the person: a pure function of identifier and filters ---------------------------------


def test_the_person_is_a_pure_function_of_identifier_and_filters() -> None:
    ana = avatar.person_for("ana@example.com", Filters())
    assert avatar.person_for("ana@example.com", Filters()) == ana
    assert 1 <= ana.seed <= 2**32 and ana.gender is None and ana.age is None
    assert avatar.person_for("ana@example.com ", Filters()).token != ana.token
    female = avatar.person_for("ana@example.com", Filters("female"))
    assert female.gender == "female" and female.token != ana.token
    # Pinned: the derivation may never change silently, or every avatar would.
    assert ana.token == "f6dc57884b513211c5db1290d41b9ec5"


def test_ages_fall_inside_the_window_and_spread_over_it() -> None:
    ages = [avatar.person_for(f"user{i}", Filters(None, 30, 39)).age for i in range(400)]
    assert set(ages) == set(range(30, 40))
    open_ended = [avatar.person_for(f"user{i}", Filters(None, 60, 100)).age for i in range(400)]
    assert min(open_ended) == 60 and max(open_ended) == avatar.USUAL_AGES[1]  # not 100
    beyond = [avatar.person_for(f"user{i}", Filters(None, 90, 100)).age for i in range(100)]
    assert all(age is not None and 90 <= age <= 100 for age in beyond)  # used as asked


# --- serving -------------------------------------------------------------------------------


def test_same_identifier_same_bytes_in_both_forms(
    client: FlaskClient, studio: CountingStudio
) -> None:
    first = client.get("/avatar/ana@example.com")
    assert first.status_code == 200 and first.mimetype == "image/jpeg"
    assert decoded(first.data).size == (128, 128)
    assert client.get("/avatar/ana@example.com").data == first.data
    assert client.get("/avatar?u=ana@example.com").data == first.data
    assert client.get("/avatar?u=ana@example.com&size=128").data == first.data
    for i in range(5):
        assert client.get(f"/avatar/user{i}").status_code == 200
    # One render per person, whatever the route; each person its own seed. (The small
    # random network's faces barely differ between seeds; the real weights' do, see
    # test_real_weights_*.)
    assert len({asked["seed"] for asked in studio.portraits}) == len(studio.portraits) == 6


@pytest.mark.parametrize("size", [16, 100, 1024])
def test_sizes_and_formats(client: FlaskClient, size: int) -> None:
    jpeg = client.get(f"/avatar?u=sizes&size={size}")
    assert decoded(jpeg.data).size == (size, size)
    webp = client.get(f"/avatar?u=sizes&size={size}&image_format=webp")
    assert webp.mimetype == "image/webp" and decoded(webp.data).format == "WEBP"


def test_one_render_per_person_kept_in_storage(
    app: Flask, client: FlaskClient, studio: CountingStudio
) -> None:
    for size in (32, 64, 128, 256):
        for image_format in ("jpeg", "webp"):
            assert (
                client.get(f"/avatar/one?size={size}&image_format={image_format}").status_code
                == 200
            )
    assert len(studio.portraits) == 1
    assert studio.portraits[0]["resolution"] == avatar.RENDER_SIZE
    assert kept_renders(app) == [avatar.render_key(avatar.person_for("one", Filters()))]


def test_filters_reach_the_renderer(client: FlaskClient, studio: CountingStudio) -> None:
    client.get("/avatar/ana?gender=female&minimum_age=60&maximum_age=69")
    asked = studio.portraits[-1]
    assert asked["gender"] == "female" and 60 <= asked["age"] <= 69
    assert asked["nearest_age"] is True
    client.get("/avatar/ana")
    assert studio.portraits[-1]["gender"] is None and studio.portraits[-1]["age"] is None


def test_the_catalog_never_changes_an_avatar(
    app: Flask, client: FlaskClient, make_face: Callable[..., Face], studio: CountingStudio
) -> None:
    before = {i: client.get(f"/avatar/user{i}?size=64").data for i in range(6)}
    for gender in ("female", "male"):
        for age in (8, 25, 67):
            make_face(gender=gender, age=age, size=64)
    # Evicted from both caches: rendered again from nothing.
    for key in kept_renders(app):
        find_service(Storage, app).delete(key)
    find_service(avatar.AvatarCache, app).clear()
    after = {i: client.get(f"/avatar/user{i}?size=64").data for i in range(6)}
    assert after == before
    assert len(studio.portraits) == 12


def test_cacheable_with_an_etag_and_304_without_rendering(
    client: FlaskClient, studio: CountingStudio
) -> None:
    response = client.get("/avatar/cache-me?size=64")
    assert response.headers["Cache-Control"] in ("public, max-age=86400", "max-age=86400, public")
    etag = response.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    rendered = len(studio.portraits)
    fresh_app_would_render = client.get(
        "/avatar/never-rendered?size=64",
        headers={
            "If-None-Match": f'"{avatar.person_for("never-rendered", Filters()).token}-64-jpeg"'
        },
    )
    assert fresh_app_would_render.status_code == 304 and fresh_app_would_render.data == b""
    assert len(studio.portraits) == rendered
    assert (
        client.get("/avatar/cache-me?size=65", headers={"If-None-Match": etag}).status_code == 200
    )


def test_memory_cache_skips_storage(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.get("/avatar/mem?size=32")
    storage = find_service(Storage, app)

    def no_storage(key: str) -> bytes:
        raise AssertionError(f"storage read {key}")

    monkeypatch.setattr(storage, "get", no_storage)
    assert client.get("/avatar/mem?size=32").data == first.data


def test_memory_cache_is_bounded_in_bytes() -> None:
    cache = avatar.AvatarCache(max_bytes=1000)
    for i in range(50):
        cache.put(f"k{i}", bytes(300))
    assert cache.bytes == 900 and len(cache) == 3
    assert cache.get("k49") is not None and cache.get("k0") is None
    cache.put("huge", bytes(1001))  # larger than the whole cache: not kept
    assert cache.get("huge") is None and cache.bytes == 900
    cache.put("k49", bytes(100))  # replacing an entry counts its new size only
    assert cache.bytes == 700
    cache.clear()
    assert (cache.bytes, len(cache), cache.get("k49")) == (0, 0, None)


def test_a_render_that_cannot_be_kept_is_still_served(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_put(key: str, data: bytes, content_type: str) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(find_service(Storage, app), "put", failing_put)
    response = client.get("/avatar/unkept?size=64")
    assert response.status_code == 200 and decoded(response.data).size == (64, 64)


def test_new_avatars_share_the_servers_fill_capacity(
    make_app: Callable[..., Flask], studio: CountingStudio
) -> None:
    client = make_app(RATELIMIT_ONDEMAND_FILLS="2/minute").test_client()
    assert client.get("/avatar/a").status_code == 200
    assert client.get("/avatar/b").status_code == 200
    busy = client.get("/avatar/c")
    assert busy.status_code == 503
    body = busy.get_json()
    assert body["error"] == "fill_capacity" and int(busy.headers["Retry-After"]) >= 1
    assert body["detail"].startswith("This avatar is not in the cache yet")
    # Kept avatars, at any size, need no capacity.
    assert client.get("/avatar/a?size=300").status_code == 200
    assert len(studio.portraits) == 2


def test_without_models_a_503_and_nothing_charged(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(RATELIMIT_ONDEMAND_FILLS="1/minute")

    def broken() -> StudioModels:
        raise FileNotFoundError("no weights")

    install_service(app, generate.Studio, SeededStudio(broken))
    response = app.test_client().get("/avatar/x")
    assert response.status_code == 503
    assert response.get_json()["error"] == "generator_unavailable"
    with app.test_request_context():
        from catalog.access.budgets import charge_fill

        charge_fill()  # the one fill of the minute is still there


@pytest.mark.parametrize(
    "url, parameter",
    [
        ("/avatar?size=64", "u"),
        ("/avatar?u=", "u"),
        ("/avatar?u=" + "a" * 257, "u"),
        ("/avatar/" + "a" * 257, "identifier"),
        ("/avatar/x?size=15", "size"),
        ("/avatar/x?size=1025", "size"),
        ("/avatar/x?image_format=png", "image_format"),
        ("/avatar/x?minimum_age=50&maximum_age=40", "minimum_age"),
        ("/avatar/x?gender=other", "gender"),
    ],
)
def test_invalid_parameters_are_400_naming_them(
    client: FlaskClient, studio: CountingStudio, url: str, parameter: str
) -> None:
    response = client.get(url)
    assert response.status_code == 400
    assert response.get_json()["parameter"] == parameter
    assert studio.portraits == []


# --- the bounded store and its collection --------------------------------------------------


def test_collect_avatars_keeps_the_store_under_its_cap(make_app: Callable[..., Flask]) -> None:
    app = make_app(AVATAR_STORE_BYTES=1024 * 1024)
    client = app.test_client()
    for i in range(12):
        assert client.get(f"/avatar/user{i}").status_code == 200
    storage = find_service(Storage, app)
    sizes = [o.size for o in storage.objects(avatar.AVATARS_PREFIX)]
    assert len(sizes) == 12
    app.config["AVATAR_STORE_BYTES"] = sum(sizes) // 2
    collection = avatar.collect_avatars(app)
    assert 0 < collection.kept_bytes <= 0.8 * sum(sizes) // 2
    assert collection.removed_objects + collection.kept_objects == 12
    # A collected avatar comes back the same.
    find_service(avatar.AvatarCache, app).clear()
    again = client.get("/avatar/user0")
    assert again.status_code == 200


def test_collect_avatars_command(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    app.test_client().get("/avatar/someone")
    result = app.test_cli_runner().invoke(args=["catalog", "collect-avatars"])
    assert result.exit_code == 0, result.output
    assert "avatars/: kept 1 objects" in result.output and "removed 0" in result.output


# --- the real generator ----------------------------------------------------------------------


def _real_portrait_script(models_dir: Path) -> str:
    return f"""
import hashlib, sys
from catalog.sql.cells import Filters
from catalog.web import avatar
from ingest.seeded import load_studio_models, SeededStudio
config = {{"TORCH_THREADS": 2, "MODELS_DIR": {str(models_dir)!r}, "DEVICE": "cpu",
          "TRUNCATION": 0.7, "ESTIMATOR": "faceapi"}}
studio = SeededStudio(lambda: load_studio_models(config))
for identifier in ("ana@example.com", "bo@example.com"):
    person = avatar.person_for(identifier, Filters("female", 60, 69))
    data = studio.portrait(person.seed, gender=person.gender, age=person.age, resolution=256,
                           nearest_age=True)
    sys.stdout.write(hashlib.sha256(data).hexdigest() + " ")
"""


@pytest.mark.model
def test_real_weights_give_the_same_avatar_in_another_process() -> None:
    """The 'forever' claim across processes: two fresh interpreters, one person, one
    byte string (same device, same thread count)."""
    models_dir = Path(os.environ.get("FACECAT_MODELS_DIR") or REPO_ROOT_MODELS)
    script = _real_portrait_script(models_dir)
    hashes = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(hashes) == 1
    ana, bo = hashes.pop().split()
    assert ana != bo and len(ana) == 64
