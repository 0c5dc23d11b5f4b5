"""The SQL side of look-alike jobs: each state change is one conditional UPDATE.

A job moves queued → processing → success | error → expired. ``claim`` takes a queued
job with ``UPDATE ... WHERE status = 'queued'``, so a message delivered twice (a retried
huey task, two consumers) runs the job once; the finishing updates write the outputs and
the status in one statement, after the outputs are stored, so a reader never sees a
success whose images are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from catalog.sql.models import FacegenJob, utcnow

FINISHED = ("success", "error")


def create_job(
    session: Session,
    job_id: str,
    *,
    key_id: str | None,
    request: dict[str, Any],
    track_id: str | None,
    webhook: str | None,
    meta: dict[str, Any],
    ttl_seconds: int,
) -> FacegenJob:
    """Insert a queued job; it expires ``ttl_seconds`` from now if it never runs."""
    job = FacegenJob(
        id=job_id,
        key_id=key_id,
        status="queued",
        request=request,
        track_id=track_id,
        webhook=webhook,
        outputs=[],
        meta=meta,
        expires_at=utcnow() + timedelta(seconds=ttl_seconds),
    )
    session.add(job)
    session.flush()
    return job


def claim(session: Session, job_id: str, limit_seconds: int) -> bool:
    """Move a queued job to processing; False if it was not queued (already taken).

    A processing job is due ``limit_seconds`` later: if its worker dies, the expiry
    task turns it into an error instead of leaving it processing forever.
    """
    result = session.execute(
        update(FacegenJob)
        .where(FacegenJob.id == job_id, FacegenJob.status == "queued")
        .values(status="processing", expires_at=utcnow() + timedelta(seconds=limit_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def finish(
    session: Session,
    job_id: str,
    *,
    status: str,
    outputs: Sequence[str] = (),
    meta: dict[str, Any] | None = None,
    error: str | None = None,
    seconds: float | None = None,
    ttl_seconds: int,
) -> None:
    """Record a job's outcome; its outputs expire ``ttl_seconds`` from now."""
    now = utcnow()
    values: dict[str, Any] = {
        "status": status,
        "outputs": list(outputs),
        "error": error,
        "seconds": seconds,
        "finished_at": now,
        "expires_at": now + timedelta(seconds=ttl_seconds),
    }
    if meta is not None:
        values["meta"] = meta
    session.execute(update(FacegenJob).where(FacegenJob.id == job_id).values(**values))


def record_webhook(
    session: Session, job_id: str, *, status: str, attempts: int, error: str | None
) -> None:
    """What the last webhook delivery did (delivered | retrying | failed)."""
    session.execute(
        update(FacegenJob)
        .where(FacegenJob.id == job_id)
        .values(webhook_status=status, webhook_attempts=attempts, webhook_error=error)
    )


def due_for_expiry(session: Session, now: datetime) -> list[FacegenJob]:
    """Jobs whose time is up: finished ones past ``expires_at``, and queued or processing
    ones past it too (their worker died: no outcome is coming)."""
    return list(
        session.scalars(
            select(FacegenJob).where(FacegenJob.expires_at < now, FacegenJob.status != "expired")
        )
    )


def expire(session: Session, job_id: str) -> None:
    """Mark a job expired, with no outputs left."""
    session.execute(
        update(FacegenJob).where(FacegenJob.id == job_id).values(status="expired", outputs=[])
    )


def recent_seconds(session: Session, steps: int, limit: int = 20) -> float | None:
    """Mean duration of the last ``limit`` successful jobs with ``steps`` (for the eta)."""
    recent = (
        select(FacegenJob.seconds)
        .where(FacegenJob.status == "success", FacegenJob.seconds.is_not(None))
        .where(FacegenJob.request["num_inference_steps"].as_integer() == steps)
        .order_by(FacegenJob.finished_at.desc())
        .limit(limit)
        .subquery()
    )
    value = session.scalar(select(func.avg(recent.c.seconds)))
    return float(value) if value is not None else None
