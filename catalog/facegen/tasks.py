"""What the facegen worker does: run a job, deliver its webhook, expire old outputs.

Each runs inside the app (``catalog.facegen.queue`` wraps them) and never raises for a
failure it can record: a job that fails becomes an ``error`` with a sentence, a webhook
that fails is retried with backoff and its last error recorded, so one bad job or one
dead endpoint never stops the worker. The uploaded photo is deleted whatever happens, and
nothing of it (bytes, URL) is logged: only job ids are.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from flask import current_app

from catalog.facegen import OUTPUTS_PREFIX, output_key, upload_key
from catalog.facegen.fetch import FetchPolicy, FetchRefused, request
from catalog.facegen.responses import job_body
from catalog.services import find_service
from catalog.sql import facegen_jobs
from catalog.sql.db import session_scope
from catalog.sql.models import FacegenJob, utcnow
from catalog.storage import Storage, StorageError

logger = logging.getLogger(__name__)

# A job still processing this long after it started has lost its worker.
PROCESSING_LIMIT_SECONDS = 30 * 60
WEBHOOK_FIRST_DELAY, WEBHOOK_BACKOFF = 10.0, 3.0
WORKER_STOPPED = "The job did not finish: its worker stopped. Submit it again."


class Lookalikes(Protocol):
    """What the runner needs of ``ingest.facegen.lookalikes.LookalikeStudio`` (the type
    the app finds it by; the class itself would import torch into the web process)."""

    def make(self, job: Any, progress: Callable[[float], None] | None = None) -> Any:
        """Outputs for one ``LookalikeJob``; raises ``PhotoRejected`` for a bad photo."""


def _delete(storage: Storage, keys: list[str], job_id: str) -> None:
    for key in keys:
        try:
            storage.delete(key)
        except StorageError as exc:
            logger.warning("facegen job %s: cannot delete %s: %s", job_id, key, exc)


def _lookalike_job(photo: bytes, params: Mapping[str, Any]) -> Any:
    from ingest.facegen.lookalikes import LookalikeJob
    from ingest.facegen.prompt import read_prompt

    return LookalikeJob(
        photo=photo,
        samples=int(params["samples"]),
        steps=int(params["num_inference_steps"]),
        s_scale=float(params["s_scale"]),
        seed=int(params["seed"]),
        plan=read_prompt(params["prompt"], params["negative_prompt"]),
        size=int(params["width"]),
    )


# Queue delivery ``attempt`` of a job's webhook after ``delay`` seconds (the queue's).
ScheduleWebhook = Callable[[str, int, float], None]


def run_job(job_id: str, schedule_webhook: ScheduleWebhook) -> None:
    """Run one queued job to success or error; a job already taken is left alone."""
    ttl = int(current_app.config["FACEGEN_TTL_SECONDS"])
    with session_scope() as session:
        if not facegen_jobs.claim(session, job_id, PROCESSING_LIMIT_SECONDS):
            logger.info("facegen job %s is not queued; skipped", job_id)
            return
        job = session.get(FacegenJob, job_id)
        assert job is not None
        params, meta, webhook = dict(job.request), dict(job.meta), job.webhook
    storage = find_service(Storage)
    started = time.monotonic()
    stored: list[str] = []
    try:
        photo = storage.get(upload_key(job_id))
        result = find_service(Lookalikes).make(_lookalike_job(photo, params))
        for index, data in enumerate(result.outputs):
            storage.put(output_key(job_id, index), data, "image/jpeg")
            stored.append(output_key(job_id, index))
        meta["distances"] = [round(float(d), 4) for d in result.distances]
        meta["inversion_distance"] = round(float(result.inversion_distance), 4)
        with session_scope() as session:
            facegen_jobs.finish(
                session,
                job_id,
                status="success",
                outputs=stored,
                meta=meta,
                seconds=time.monotonic() - started,
                ttl_seconds=ttl,
            )
        logger.info("facegen job %s done in %.1f s", job_id, time.monotonic() - started)
    except Exception as exc:
        detail = getattr(exc, "detail", None) or (
            f"The job failed ({type(exc).__name__}); nothing of it was kept."
        )
        logger.warning("facegen job %s failed: %s", job_id, type(exc).__name__, exc_info=True)
        _delete(storage, stored, job_id)
        with session_scope() as session:
            facegen_jobs.finish(
                session,
                job_id,
                status="error",
                error=detail,
                seconds=time.monotonic() - started,
                ttl_seconds=ttl,
            )
    finally:
        _delete(storage, [upload_key(job_id)], job_id)
    if webhook:
        schedule_webhook(job_id, 1, 0.0)


def deliver_webhook(job_id: str, attempt: int, schedule_webhook: ScheduleWebhook) -> None:
    """POST the job's final body (with its ``track_id``) to its webhook; on failure
    schedule the next attempt (10 s, 30 s, 90 s, ...) until the settings' attempts run out."""
    config = current_app.config
    storage = find_service(Storage)
    with session_scope() as session:
        job = session.get(FacegenJob, job_id)
        if job is None or not job.webhook:
            return
        url, body = job.webhook, job_body(job, read=storage.get)
    error: str | None = None
    try:
        answer = request(
            url,
            FetchPolicy.from_config(config),
            method="POST",
            body=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json"},
        )
        if not 200 <= answer.status < 300:
            error = f"The webhook answered HTTP {answer.status}."
    except FetchRefused as exc:
        error = exc.detail
    except Exception as exc:  # never let one endpoint stop the worker
        error = f"Delivery failed ({type(exc).__name__})."
    attempts = int(config["FACEGEN_WEBHOOK_ATTEMPTS"])
    status = "delivered" if error is None else ("retrying" if attempt < attempts else "failed")
    with session_scope() as session:
        facegen_jobs.record_webhook(session, job_id, status=status, attempts=attempt, error=error)
    if status == "retrying":
        delay = WEBHOOK_FIRST_DELAY * WEBHOOK_BACKOFF ** (attempt - 1)
        schedule_webhook(job_id, attempt + 1, delay)
    logger.info("facegen job %s webhook attempt %d: %s", job_id, attempt, status)


def expire_jobs() -> int:
    """Remove the outputs of jobs past their time; end jobs whose worker died. Returns how
    many jobs it handled. Objects are listed by the job's prefix, so outputs stored by a
    run that died before recording them go too."""
    storage = find_service(Storage)
    ttl = int(current_app.config["FACEGEN_TTL_SECONDS"])
    with session_scope() as session:
        due = [(job.id, job.status) for job in facegen_jobs.due_for_expiry(session, utcnow())]
    for job_id, status in due:
        try:
            keys = list(storage.keys(f"{OUTPUTS_PREFIX}{job_id}/"))
        except StorageError as exc:
            logger.warning("facegen job %s: cannot list outputs: %s", job_id, exc)
            continue  # the next run tries again
        _delete(storage, [*keys, upload_key(job_id)], job_id)
        with session_scope() as session:
            if status in ("queued", "processing"):
                facegen_jobs.finish(
                    session, job_id, status="error", error=WORKER_STOPPED, ttl_seconds=ttl
                )
            else:
                facegen_jobs.expire(session, job_id)
    if due:
        logger.info("facegen: %d jobs expired or ended", len(due))
    return len(due)
