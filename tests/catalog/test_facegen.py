"""``/api/v6/image_editing/face_gen``, ``fetch`` and the outputs: the service around the model.

Real here: the HTTP views, keys and budgets, the database (SQLite and PostgreSQL), the
storage, huey (in memory; on SQLite and on Redis for the two production shapes), the
photo checks (OpenCV on a photoreal face made by the real generator) and webhooks over
HTTP. Replaced: the look-alike model itself (``Lookalikes``), by a stand-in returning
fixed JPEGs, because one inversion takes most of a minute on this CPU; the model is
tested in tests/ingest/test_facegen_*.py.
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import select, update

from catalog.facegen import OUTPUTS_PREFIX, UPLOADS_PREFIX
from catalog.facegen.queue import FacegenQueue
from catalog.facegen.tasks import WORKER_STOPPED, Lookalikes, expire_jobs
from catalog.services import find_service, install_service
from catalog.sql.db import session_scope
from catalog.sql.models import FacegenJob, utcnow
from catalog.storage import Storage
from tests.conftest import REPO_ROOT_MODELS

pytestmark = pytest.mark.model

FACE_GEN = "/api/v6/image_editing/face_gen"


@pytest.fixture(scope="module")
def face_photo() -> bytes:
    """A photoreal face from the real generator, as a 512 px JPEG upload."""
    from ingest.seeded import SeededStudio, load_studio_models

    models_dir = os.environ.get("FACECAT_MODELS_DIR") or str(REPO_ROOT_MODELS)
    config = {"TORCH_THREADS": 0, "MODELS_DIR": models_dir, "DEVICE": "cpu"}
    studio = SeededStudio(
        lambda: load_studio_models({**config, "TRUNCATION": 0.7, "ESTIMATOR": "faceapi"})
    )
    return studio.portrait(2024, gender="female", age=35, resolution=512)


def as_base64(data: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")


def jpeg(colour: tuple[int, int, int], size: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(out, "JPEG")
    return out.getvalue()


class FakeLookalikes:
    """Fixed outputs, and what it was asked (or an exception to raise)."""

    def __init__(self) -> None:
        self.jobs: list[Any] = []
        self.fail: Exception | None = None

    def make(self, job: Any, progress: Callable[[float], None] | None = None) -> Any:
        self.jobs.append(job)
        if self.fail is not None:
            raise self.fail
        outputs = [jpeg((40 * i, 90, 160), job.size) for i in range(job.samples)]
        return SimpleNamespace(
            inversion=jpeg((1, 2, 3), job.size),
            outputs=outputs,
            distances=[0.41 + i / 100 for i in range(job.samples)],
            inversion_distance=0.33,
            seconds=1.0,
        )


@pytest.fixture
def lookalikes() -> FakeLookalikes:
    return FakeLookalikes()


@pytest.fixture
def make_app(app_factory: Callable[..., Flask], lookalikes: FakeLookalikes) -> Callable[..., Flask]:
    def make(**settings: Any) -> Flask:
        app = app_factory(
            **{"FACEGEN_QUEUE_URL": "memory://", "FACEGEN_WAIT_SECONDS": 0, **settings}
        )
        install_service(app, Lookalikes, lookalikes)
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


def make_key(app: Flask, user_class: str = "basic") -> str:
    result = app.test_cli_runner().invoke(
        args=[
            "keys",
            "create",
            "--owner",
            f"{os.urandom(4).hex()}@example.com",
            "--name",
            "fg",
            "--class",
            user_class,
        ]
    )
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


@pytest.fixture
def key(app: Flask) -> str:
    return make_key(app)


def body(key: str | None, photo: bytes, **fields: Any) -> dict[str, Any]:
    sent: dict[str, Any] = {"face_image": as_base64(photo), **fields}  # a data: URL
    if key is not None:
        sent["key"] = key
    return sent


def jobs(app: Flask) -> list[FacegenJob]:
    with app.app_context(), session_scope() as session:
        found = list(session.scalars(select(FacegenJob)))
        for job in found:
            session.expunge(job)
        return found


def stored(app: Flask, prefix: str) -> list[str]:
    return list(find_service(Storage, app).keys(prefix))


def drain(app: Flask) -> int:
    return find_service(FacegenQueue, app).drain()


# --- admission ----------------------------------------------------------------------------


def test_anonymous_callers_get_a_401_naming_both_ways_to_send_a_key(
    client: FlaskClient, face_photo: bytes
) -> None:
    response = client.post(FACE_GEN, json=body(None, face_photo))
    assert response.status_code == 401
    answer = response.get_json()
    assert answer["status"] == "error" and "key in the body" in answer["message"]


def test_a_class_below_the_setting_gets_a_403(
    make_app: Callable[..., Flask], face_photo: bytes
) -> None:
    app = make_app(FACEGEN_MIN_CLASS="professional")
    response = app.test_client().post(FACE_GEN, json=body(make_key(app, "basic"), face_photo))
    assert response.status_code == 403 and response.get_json()["required_class"] == "professional"


def test_a_job_is_queued_and_answers_processing_within_the_wait(
    app: Flask, client: FlaskClient, key: str, face_photo: bytes
) -> None:
    response = client.post(
        FACE_GEN,
        json=body(
            key, face_photo, samples="2", prompt="a photo of her at 60, smiling", track_id=77
        ),
    )
    assert response.status_code == 200
    answer = response.get_json()
    assert answer["status"] == "processing" and answer["eta"] > 0
    job_id = answer["id"]
    assert len(job_id) == 32 and answer["track_id"] == "77"
    assert answer["fetch_result"] == f"http://facecat.test/api/v6/image_editing/fetch/{job_id}"
    assert answer["future_links"] == [
        f"http://facecat.test/facegen/{job_id}/{i}.jpg" for i in range(2)
    ]
    meta = answer["meta"]
    assert meta["samples"] == 2 and meta["num_inference_steps"] == 31 and meta["s_scale"] == 1.0
    assert "at 60" in " ".join(meta["used_words"]) and "smiling" in meta["unused_words"]
    assert meta["not_used"] == ["guidance_scale"] and "face_image" not in meta
    assert stored(app, UPLOADS_PREFIX) == [f"{UPLOADS_PREFIX}{job_id}"]


def test_the_authorization_header_works_too(
    client: FlaskClient, key: str, face_photo: bytes
) -> None:
    response = client.post(
        FACE_GEN, json=body(None, face_photo), headers={"Authorization": f"Token {key}"}
    )
    assert response.status_code == 200 and response.get_json()["status"] == "processing"


@pytest.mark.parametrize(
    "fields, parameter",
    [
        ({"style": "anime"}, "style"),
        ({"width": 512, "height": 768}, "height"),
        ({"width": 128}, "width"),
        ({"num_inference_steps": 30}, "num_inference_steps"),
        ({"samples": 5}, "samples"),
        ({"s_scale": 2.5}, "s_scale"),
        ({"s_scale": "lots"}, "s_scale"),
        ({"webhook": "ftp://example.com/hook"}, "webhook"),
        ({"lora_model": "x"}, "lora_model"),
        ({"track_id": "x" * 65}, "track_id"),
        ({"base64": "maybe"}, "base64"),
    ],
)
def test_bad_fields_are_400s_naming_them_and_change_nothing(
    app: Flask,
    client: FlaskClient,
    key: str,
    face_photo: bytes,
    fields: dict[str, Any],
    parameter: str,
) -> None:
    response = client.post(FACE_GEN, json=body(key, face_photo, **fields))
    assert response.status_code == 400, response.get_json()
    answer = response.get_json()
    assert answer["parameter"] == parameter and answer["status"] == "error"
    assert answer["message"] == answer["detail"]
    assert jobs(app) == [] and stored(app, "facegen/") == []


@pytest.mark.parametrize(
    "face_image, code",
    [
        ("data:image/jpeg;base64,@@@not base64@@@", "invalid_base64"),
        (as_base64(b"this is not an image at all"), "not_an_image"),
        (as_base64(jpeg((128, 128, 128), 400)), "no_face"),
        ("http://example.com/face.jpg", "url_fetch_disabled"),
        ("face.jpg", "invalid_parameter"),
    ],
)
def test_bad_photos_are_400s_before_any_job_or_charge(
    app: Flask, client: FlaskClient, key: str, face_image: str, code: str
) -> None:
    sent = {"key": key, "face_image": face_image, "base64": face_image.startswith("data:")}
    response = client.post(FACE_GEN, json=sent)
    assert response.status_code == 400
    assert response.get_json()["error"] == code and response.get_json()["parameter"] == "face_image"
    assert jobs(app) == []
    with app.test_request_context():
        from catalog.access.budgets import generation_budget
        from catalog.access.keys import authenticate

        caller = authenticate(f"Token {key}")
        assert [left for _, left in generation_budget(caller)] == [5, 120]


def test_two_faces_are_a_400(client: FlaskClient, key: str, face_photo: bytes) -> None:
    face = Image.open(io.BytesIO(face_photo)).convert("RGB")
    pair = Image.new("RGB", (face.width * 2, face.height))
    pair.paste(face, (0, 0))
    pair.paste(face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (face.width, 0))
    out = io.BytesIO()
    pair.save(out, "JPEG")
    response = client.post(FACE_GEN, json=body(key, out.getvalue()))
    assert response.status_code == 400 and response.get_json()["error"] == "several_faces"


def test_not_json_is_a_400(client: FlaskClient) -> None:
    response = client.post(FACE_GEN, data="face_image=x", content_type="text/plain")
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_body"


def test_each_sample_is_charged_to_the_callers_budget(
    client: FlaskClient, key: str, face_photo: bytes
) -> None:
    assert client.post(FACE_GEN, json=body(key, face_photo, samples=4)).status_code == 200
    refused = client.post(FACE_GEN, json=body(key, face_photo, samples=2))
    assert refused.status_code == 429  # basic: 5 a minute; 4 spent
    assert refused.get_json()["budget"] == "generation"


# --- the worker's side ----------------------------------------------------------------------


def test_the_worker_runs_the_job_and_fetch_returns_outputs(
    app: Flask, client: FlaskClient, key: str, face_photo: bytes, lookalikes: FakeLookalikes
) -> None:
    job_id = client.post(
        FACE_GEN, json=body(key, face_photo, samples=2, s_scale=1.5, seed=9, width=256, height=256)
    ).get_json()["id"]
    assert drain(app) == 1
    asked = lookalikes.jobs[0]
    assert (asked.samples, asked.steps, asked.s_scale, asked.seed, asked.size) == (
        2,
        31,
        1.5,
        9,
        256,
    )
    assert asked.photo == face_photo
    fetched = client.post(f"/api/v6/image_editing/fetch/{job_id}", json={"key": key})
    answer = fetched.get_json()
    assert answer["status"] == "success" and answer["generationTime"] >= 0
    assert (
        answer["output"]
        == answer["proxy_links"]
        == [f"http://facecat.test/facegen/{job_id}/{i}.jpg" for i in range(2)]
    )
    assert answer["meta"]["distances"] == [0.41, 0.42]
    for url in answer["output"]:
        image = client.get(url.removeprefix("http://facecat.test"))
        assert image.status_code == 200 and image.mimetype == "image/jpeg"
        assert Image.open(io.BytesIO(image.data)).size == (256, 256)
        assert "private" in image.headers["Cache-Control"]
    assert stored(app, UPLOADS_PREFIX) == []  # the photo is gone once the job ended
    assert len(stored(app, OUTPUTS_PREFIX)) == 2


def test_base64_outputs(app: Flask, client: FlaskClient, key: str, face_photo: bytes) -> None:
    """ModelsLab's base64 flag means base64 in and base64 out."""
    job_id = client.post(FACE_GEN, json=body(key, face_photo, base64=True)).get_json()["id"]
    drain(app)
    answer = client.post(f"/api/v6/image_editing/fetch/{job_id}", json={"key": key}).get_json()
    assert answer["output"][0].startswith("data:image/jpeg;base64,")
    data = base64.b64decode(answer["output"][0].split(",", 1)[1])
    assert Image.open(io.BytesIO(data)).format == "JPEG"


def test_a_request_that_waits_gets_the_success_itself(
    make_app: Callable[..., Flask], face_photo: bytes
) -> None:
    """A worker (a thread here) finishes within FACEGEN_WAIT_SECONDS."""
    app = make_app(FACEGEN_WAIT_SECONDS=60)
    key = make_key(app)
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set() and drain(app) == 0:
            stop.wait(0.05)

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        answer = app.test_client().post(FACE_GEN, json=body(key, face_photo)).get_json()
    finally:
        stop.set()
        thread.join(30)
    assert answer["status"] == "success" and len(answer["output"]) == 1


def test_a_failing_job_is_an_error_with_nothing_kept(
    app: Flask, client: FlaskClient, key: str, face_photo: bytes, lookalikes: FakeLookalikes
) -> None:
    lookalikes.fail = RuntimeError("out of memory")
    job_id = client.post(FACE_GEN, json=body(key, face_photo)).get_json()["id"]
    drain(app)
    answer = client.post(f"/api/v6/image_editing/fetch/{job_id}", json={"key": key}).get_json()
    assert answer["status"] == "error" and "RuntimeError" in answer["message"]
    assert stored(app, "facegen/") == []
    assert client.get(f"/facegen/{job_id}/0.jpg").status_code == 404


def test_a_job_runs_once_even_if_delivered_twice(
    app: Flask, client: FlaskClient, key: str, face_photo: bytes, lookalikes: FakeLookalikes
) -> None:
    job_id = client.post(FACE_GEN, json=body(key, face_photo)).get_json()["id"]
    find_service(FacegenQueue, app).submit(job_id)  # a duplicate message
    assert drain(app) == 2
    assert len(lookalikes.jobs) == 1


def test_fetch_needs_the_submitting_key(
    app: Flask, client: FlaskClient, key: str, face_photo: bytes
) -> None:
    job_id = client.post(FACE_GEN, json=body(key, face_photo)).get_json()["id"]
    other = make_key(app)
    for sent in ({"key": other}, {}):
        response = client.post(f"/api/v6/image_editing/fetch/{job_id}", json=sent)
        assert response.status_code == 404 and response.get_json()["status"] == "error"
    assert (
        client.post("/api/v6/image_editing/fetch/nonexistent", json={"key": key}).status_code == 404
    )


# --- expiry -------------------------------------------------------------------------------


def _age(app: Flask, job_id: str, seconds: int) -> None:
    with app.app_context(), session_scope() as session:
        session.execute(
            update(FacegenJob)
            .where(FacegenJob.id == job_id)
            .values(expires_at=utcnow() - timedelta(seconds=seconds))
        )


def test_expired_outputs_are_removed_and_answer_410(
    app: Flask, client: FlaskClient, key: str, face_photo: bytes
) -> None:
    job_id = client.post(FACE_GEN, json=body(key, face_photo, samples=2)).get_json()["id"]
    drain(app)
    _age(app, job_id, 1)
    gone = client.get(f"/facegen/{job_id}/0.jpg")  # due, not yet collected: 410 already
    assert gone.status_code == 410 and gone.get_json()["error"] == "expired"
    with app.app_context():
        assert expire_jobs() == 1
    assert stored(app, "facegen/") == []
    assert client.get(f"/facegen/{job_id}/1.jpg").status_code == 410
    fetched = client.post(f"/api/v6/image_editing/fetch/{job_id}", json={"key": key})
    assert fetched.status_code == 410 and fetched.get_json()["status"] == "error"


def test_a_job_whose_worker_died_ends_as_an_error(
    app: Flask, client: FlaskClient, key: str, face_photo: bytes
) -> None:
    job_id = client.post(FACE_GEN, json=body(key, face_photo)).get_json()["id"]
    with app.app_context(), session_scope() as session:
        session.execute(update(FacegenJob).values(status="processing"))
    find_service(Storage, app).put(f"{OUTPUTS_PREFIX}{job_id}/0.jpg", b"half", "image/jpeg")
    _age(app, job_id, 1)
    with app.app_context():
        assert expire_jobs() == 1
    answer = client.post(f"/api/v6/image_editing/fetch/{job_id}", json={"key": key}).get_json()
    assert answer["status"] == "error" and answer["message"] == WORKER_STOPPED
    assert stored(app, "facegen/") == []  # the upload and the half-written output


# --- webhooks -----------------------------------------------------------------------------


@pytest.fixture
def hook() -> Iterator[tuple[str, list[dict[str, Any]], list[int]]]:
    """A webhook endpoint on loopback: (url, bodies received, statuses to answer)."""
    received: list[dict[str, Any]] = []
    statuses: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(statuses.pop(0) if statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", received, statuses
    server.shutdown()
    server.server_close()


def test_the_webhook_gets_the_final_body_with_the_track_id(
    make_app: Callable[..., Flask], face_photo: bytes, hook: tuple[str, list[Any], list[int]]
) -> None:
    url, received, _ = hook
    app = make_app(FACEGEN_FETCH_ALLOWED_NETWORKS="127.0.0.1/32")
    key = make_key(app)
    client = app.test_client()
    job_id = client.post(
        FACE_GEN, json=body(key, face_photo, webhook=url, track_id="t-1")
    ).get_json()["id"]
    assert drain(app) == 2  # the job, then its webhook
    assert received[0]["status"] == "success" and received[0]["track_id"] == "t-1"
    assert received[0]["id"] == job_id and len(received[0]["output"]) == 1
    (job,) = jobs(app)
    assert (job.webhook_status, job.webhook_attempts, job.webhook_error) == ("delivered", 1, None)


def test_a_failing_webhook_is_retried_with_backoff_then_recorded(
    make_app: Callable[..., Flask], face_photo: bytes, hook: tuple[str, list[Any], list[int]]
) -> None:
    url, received, statuses = hook
    app = make_app(FACEGEN_FETCH_ALLOWED_NETWORKS="127.0.0.1/32", FACEGEN_WEBHOOK_ATTEMPTS=2)
    key = make_key(app)
    statuses.extend([500, 503])
    app.test_client().post(FACE_GEN, json=body(key, face_photo, webhook=url))
    # huey's eta is naive UTC. Bracketing the delivery between two readings of the clock
    # checks the 10 s delay however long the delivery itself takes.
    before = datetime.now(UTC).replace(tzinfo=None)
    drain(app)
    after = datetime.now(UTC).replace(tzinfo=None)
    (job,) = jobs(app)
    assert (job.webhook_status, job.webhook_attempts) == ("retrying", 1)
    assert job.webhook_error == "The webhook answered HTTP 500."
    huey = find_service(FacegenQueue, app).huey
    (scheduled,) = huey.scheduled()  # the second attempt, 10 s later
    delay = timedelta(seconds=10)
    assert before + delay <= scheduled.eta <= after + delay
    huey.execute(scheduled, timestamp=scheduled.eta)
    (job,) = jobs(app)
    assert (job.webhook_status, job.webhook_attempts) == ("failed", 2) and len(received) == 2


def test_a_webhook_on_loopback_is_refused_by_default(
    app: Flask, key: str, face_photo: bytes, hook: tuple[str, list[Any], list[int]]
) -> None:
    url, received, _ = hook
    app.config["FACEGEN_WEBHOOK_ATTEMPTS"] = 1
    app.test_client().post(FACE_GEN, json=body(key, face_photo, webhook=url))
    drain(app)
    (job,) = jobs(app)
    assert job.webhook_status == "failed" and "non-public" in (job.webhook_error or "")
    assert received == []


# --- the production shapes of the queue ---------------------------------------------------


def test_the_embedded_default_queues_on_a_sqlite_file_a_worker_process_reads(
    make_app: Callable[..., Flask], face_photo: bytes, tmp_path: Path
) -> None:
    """Two apps on one queue file: the web process enqueues, the worker's app runs it."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    web = make_app(FACEGEN_QUEUE_URL=url)
    key = make_key(web)
    job_id = web.test_client().post(FACE_GEN, json=body(key, face_photo)).get_json()["id"]
    worker = make_app(
        FACEGEN_QUEUE_URL=url,
        DATABASE_URL=web.config["DATABASE_URL"],
        STORAGE_URL=web.config["STORAGE_URL"],
    )
    assert drain(worker) == 1
    fetched = web.test_client().post(f"/api/v6/image_editing/fetch/{job_id}", json={"key": key})
    assert fetched.get_json()["status"] == "success"


@pytest.mark.redis
def test_the_queue_runs_on_redis(
    make_app: Callable[..., Flask], face_photo: bytes, redis_url: str
) -> None:
    name = f"facegen-test-{os.urandom(4).hex()}"  # xdist workers share the Redis
    web = make_app(FACEGEN_QUEUE_URL=redis_url, FACEGEN_QUEUE_NAME=name)
    key = make_key(web)
    job_id = web.test_client().post(FACE_GEN, json=body(key, face_photo)).get_json()["id"]
    worker = make_app(
        FACEGEN_QUEUE_URL=redis_url,
        FACEGEN_QUEUE_NAME=name,
        DATABASE_URL=web.config["DATABASE_URL"],
        STORAGE_URL=web.config["STORAGE_URL"],
    )
    try:
        assert drain(worker) == 1
        fetched = web.test_client().post(f"/api/v6/image_editing/fetch/{job_id}", json={"key": key})
        assert fetched.get_json()["status"] == "success"
    finally:
        find_service(FacegenQueue, web).huey.flush()


def test_the_facegen_worker_command_consumes_the_queue(
    make_app: Callable[..., Flask], face_photo: bytes, tmp_path: Path
) -> None:
    """``facecat facegen worker`` as its own process, on the web's SQLite queue file.

    The upload is removed before the worker starts, so the job ends (as an error naming
    what happened) before any model would load: this checks the consumer's wiring, not
    the model, and stays fast.
    """
    import signal
    import subprocess
    import sys
    import time

    queue_url = f"sqlite:///{tmp_path / 'queue.db'}"
    web = make_app(FACEGEN_QUEUE_URL=queue_url)
    key = make_key(web)
    client = web.test_client()
    job_id = client.post(FACE_GEN, json=body(key, face_photo)).get_json()["id"]
    find_service(Storage, web).delete(f"{UPLOADS_PREFIX}{job_id}")
    env = {
        **os.environ,
        "FACECAT_DATABASE_URL": web.config["DATABASE_URL"],
        "FACECAT_STORAGE_URL": web.config["STORAGE_URL"],
        "FACECAT_FACEGEN_QUEUE_URL": queue_url,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "facegen", "worker"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        answer: dict[str, Any] = {}
        # About a second here; the bound only stops a broken worker from hanging the
        # suite, so it is far beyond what a loaded CI machine needs to start a process.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            answer = client.post(
                f"/api/v6/image_editing/fetch/{job_id}", json={"key": key}
            ).get_json()
            if answer["status"] != "processing" or worker.poll() is not None:
                break
            time.sleep(0.1)
        assert answer["status"] == "error" and "ObjectNotFound" in answer["message"]
    finally:
        worker.send_signal(signal.SIGINT)
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output


def test_a_body_over_the_photo_cap_is_a_413_before_it_is_read(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(FACEGEN_MAX_PHOTO_BYTES=10_000)
    key = make_key(app)
    huge = {"key": key, "face_image": "data:image/jpeg;base64," + "A" * 200_000}
    response = app.test_client().post(FACE_GEN, json=huge)
    assert response.status_code == 413 and response.get_json()["error"] == "payload_too_large"
    assert jobs(app) == []
