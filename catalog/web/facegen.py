"""``POST /api/v6/image_editing/face_gen`` and ``/fetch/<id>``: look-alikes, ModelsLab style.

The request is checked completely here (body, key and class, the photo and its one
face), then the caller is charged one generation per sample and a job is queued for the
facegen worker. The request waits at most ``FACEGEN_WAIT_SECONDS`` for the outcome —
polling the job's row, never running the model itself — and otherwise answers
``processing`` with an ``eta`` and the ``fetch_result`` URL. Outputs are served from
``/facegen/<id>/<n>.jpg`` until ``FACEGEN_TTL_SECONDS`` after the job, then 410.

The job id is a random 128-bit token, so knowing it is what grants access to outputs
(an ``<img>`` cannot send a key); ``fetch`` also requires the submitting key when there
was one.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from catalog.access.budgets import charge_generation
from catalog.access.keys import Caller, authenticate, current_caller, require_class
from catalog.access.limits import IMAGES, LOOKUPS, limited
from catalog.errors import ApiError
from catalog.facegen import upload_key
from catalog.facegen.intake import check_photo, photo_bytes
from catalog.facegen.queue import FacegenQueue
from catalog.facegen.responses import as_modelslab, job_body, modelslab_error
from catalog.services import find_service
from catalog.sql import facegen_jobs
from catalog.sql.db import session_scope
from catalog.sql.models import FacegenJob, utcnow
from catalog.storage import ObjectNotFound, Storage, StorageError
from catalog.web.facegen_body import FacegenParams, parse_body

logger = logging.getLogger(__name__)

bp = Blueprint("facegen", __name__)

POLL_SECONDS = 0.25
# Ids are 32 hex digits (the facegen_job key holds 32); a longer one is never looked up.
MAX_JOB_ID = 32
# Until jobs have run: seconds per inference step of a whole 4-sample job on a 2-core CPU
# (docs/models.md: 7.6 s at 21 steps idle, about 50 s when the cores are shared).
FIRST_ETA_SECONDS_PER_STEP = 1.0


def _caller(body_key: str | None) -> Caller:
    """The header's caller, or the body's ``key`` (ModelsLab's way) when no header came."""
    if body_key is not None and request.headers.get("Authorization") is None:
        try:
            g.caller = authenticate(f"Token {body_key}")
        except ApiError as error:  # answered in ModelsLab's shape too, as every error here
            raise as_modelslab(error) from None
    return current_caller()


def _admit(caller: Caller) -> None:
    """401 for anonymous callers and 403 for classes below ``FACEGEN_MIN_CLASS``."""
    least = current_app.config["FACEGEN_MIN_CLASS"]
    if caller.at_least(least):
        return
    if caller.key_id is None:
        detail = (
            "face_gen needs an API key: send it as key in the body or as "
            '"Authorization: Token <key>".'
        )
        raise modelslab_error(
            401, "unauthorized", detail, headers={"WWW-Authenticate": 'Token realm="facecat"'}
        )
    require_class(least, "face_gen")


def _eta(job: FacegenJob) -> float:
    """Seconds until the job is likely done: recent jobs' mean, times the queue ahead."""
    steps = int(job.request["num_inference_steps"])
    with session_scope() as session:
        mean = facegen_jobs.recent_seconds(session, steps)
    if mean is None:
        mean = steps * FIRST_ETA_SECONDS_PER_STEP
    try:
        pending = find_service(FacegenQueue).pending()
    except Exception:  # the eta is a hint; a queue hiccup must not fail the answer
        pending = 0
    # A queued job is itself among the pending messages; a running one is not.
    ahead = max(0, pending - 1) if job.status == "queued" else pending
    return mean * (1 + ahead)


def _read_job(job_id: str) -> FacegenJob | None:
    """The job detached from its session, or None (also for an id no job can have)."""
    if len(job_id) > MAX_JOB_ID:
        return None
    with session_scope() as session:
        job = session.get(FacegenJob, job_id)
        if job is not None:
            session.expunge(job)
        return job


def _answer(job: FacegenJob) -> Response:
    body: dict[str, Any] = job_body(
        job,
        eta=_eta(job) if job.status in ("queued", "processing") else None,
        read=find_service(Storage).get,
    )
    return jsonify(body)


def _queue_job(params: FacegenParams, photo: bytes, caller: Caller, meta: dict[str, Any]) -> str:
    """Store the photo, insert the job, enqueue it; undo what was done if a step fails."""
    job_id = secrets.token_hex(16)
    storage = find_service(Storage)
    storage.put(upload_key(job_id), photo, "application/octet-stream")
    try:
        with session_scope() as session:
            facegen_jobs.create_job(
                session,
                job_id,
                key_id=caller.key_id,
                # base_url: the worker builds output URLs (for webhooks) without a request.
                request={**params.record(), "base_url": request.host_url},
                track_id=params.track_id,
                webhook=params.webhook,
                meta=meta,
                ttl_seconds=int(current_app.config["FACEGEN_TTL_SECONDS"]),
            )
        find_service(FacegenQueue).submit(job_id)
    except Exception:
        logger.exception("facegen job %s could not be queued", job_id)
        try:
            storage.delete(upload_key(job_id))
            with session_scope() as session:
                facegen_jobs.finish(
                    session,
                    job_id,
                    status="error",
                    error="The job could not be queued.",
                    ttl_seconds=int(current_app.config["FACEGEN_TTL_SECONDS"]),
                )
        except Exception:
            logger.warning("facegen job %s: cleanup after a failed enqueue failed", job_id)
        raise ApiError(
            503,
            "queue_unavailable",
            "The job queue is not reachable; try again shortly.",
            headers={"Retry-After": "10"},
        ) from None
    return job_id


@bp.post("/api/v6/image_editing/face_gen")
@limited(LOOKUPS)
def face_gen() -> Response:
    """Queue a look-alike job and answer its outcome, or ``processing`` after the wait."""
    # The largest photo as base64, plus room for the other fields: a bigger body is a 413
    # before it is read into memory (also when it comes chunked, without a length).
    request.max_content_length = int(current_app.config["FACEGEN_MAX_PHOTO_BYTES"]) * 4 // 3 + (
        64 * 1024
    )
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        detail = "The body must be a JSON object (Content-Type: application/json)."
        raise modelslab_error(400, "invalid_body", detail)
    params = parse_body(body)
    caller = _caller(params.key)
    _admit(caller)
    from ingest.facegen.prompt import read_prompt

    plan = read_prompt(params.prompt, params.negative_prompt)
    config = current_app.config
    photo = photo_bytes(params.face_image, params.base64, config)
    check_photo(photo)
    charge_generation(caller, cost=params.samples)
    meta = {
        **params.record(),
        "used_words": list(plan.used),
        "unused_words": list(plan.unused),
        "not_used": ["guidance_scale"],
    }
    job_id = _queue_job(params, photo, caller, meta)
    deadline = time.monotonic() + float(config["FACEGEN_WAIT_SECONDS"])
    while True:
        job = _read_job(job_id)
        assert job is not None
        if job.status not in ("queued", "processing") or time.monotonic() >= deadline:
            return _answer(job)
        time.sleep(POLL_SECONDS)


def _owned_job(job_id: str) -> FacegenJob:
    """The job, if this caller may see it (its key, or no key at submission)."""
    body = request.get_json(silent=True)
    caller = _caller(body.get("key") if isinstance(body, dict) else None)
    job = _read_job(job_id)
    if job is None or (job.key_id is not None and job.key_id != caller.key_id):
        detail = "No job with this id (for this key)."
        raise modelslab_error(404, "not_found", detail)
    return job


def _expired(job: FacegenJob) -> ApiError:
    detail = (
        "This job's outputs expired and were removed (they are kept "
        f"{current_app.config['FACEGEN_TTL_SECONDS']} seconds)."
    )
    return modelslab_error(410, "expired", detail, id=job.id)


@bp.route("/api/v6/image_editing/fetch/<job_id>", methods=["GET", "POST"])
@limited(LOOKUPS)
def fetch(job_id: str) -> Response:
    """The job's body now: success with outputs, processing with an eta, or error."""
    job = _owned_job(job_id)
    if job.status == "expired":
        raise _expired(job)
    return _answer(job)


@bp.get("/facegen/<job_id>/<int:index>.jpg")
@limited(IMAGES)
def output(job_id: str, index: int) -> Response:
    """One output image until it expires (410 afterwards)."""
    job = _read_job(job_id)
    if job is None or job.status not in ("success", "expired"):
        raise ApiError(404, "not_found", "No such output.")
    if job.status == "expired" or job.expires_at <= utcnow():
        raise _expired(job)
    if not 0 <= index < len(job.outputs):
        raise ApiError(404, "not_found", "No such output.")
    try:
        data = find_service(Storage).get(job.outputs[index])
    except ObjectNotFound:
        raise _expired(job) from None
    except StorageError as exc:
        raise ApiError(503, "storage_unavailable", "Storage is not reachable.") from exc
    response = Response(data, mimetype="image/jpeg")
    response.cache_control.private = True
    response.cache_control.max_age = max(0, int((job.expires_at - utcnow()).total_seconds()))
    return response
