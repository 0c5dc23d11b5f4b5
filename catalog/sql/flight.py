"""Single flight across processes, and the backfill queue: both are rows in the database.

Single flight: ``ondemand_job`` has the normalised filter as its primary key. A request
that finds no stored face tries to *claim* the row (insert it, or take it over when its
last run has finished or its owner died and the claim expired). Exactly one claimant
wins on SQLite and PostgreSQL alike, because both statements are atomic and the
take-over re-checks its condition on the locked row. The others *join*: they poll the row
until its run finishes, then take a face from the catalog, where the run admitted every
passing candidate. The database is the only thing all web workers share, so no extra
service (Redis lock) is needed, and a crashed owner costs at most ``ttl`` seconds.

Backfill: ``backfill_request`` rows, one per normalised filter, counted up by every 404
or slow hit, read by the worker (``ingest.ondemand.engine.run_backfill``).

This is the SQL behind ``ingest.ondemand.ports.JobBoard`` and ``BackfillQueue``
(``catalog.sql.ondemand.SqlOndemandCatalog`` delegates here); the engine decides when to
claim, wait and queue, and the vocabulary it uses (``filter_key``, the backfill states)
is defined beside those ports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from catalog.sql.models import BackfillRequest, OndemandJob, utcnow
from ingest.ondemand.ports import FULFILLED, PENDING, filter_key

logger = logging.getLogger(__name__)

RUNNING, DONE, FAILED = "running", "done", "failed"
POLL_SECONDS = 0.05


def _insert(session: Session):  # type: ignore[no-untyped-def]
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def claim(factory: sessionmaker[Session], key: str, owner: str, ttl: float) -> bool:
    """Whether ``owner`` now holds the run for ``key`` (False: someone else's is running)."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl)
    with factory() as session:
        insert = _insert(session)
        inserted = session.execute(
            insert(OndemandJob)
            .values(
                key=key, status=RUNNING, owner=owner, started_at=now, expires_at=expires, runs=0
            )
            .on_conflict_do_nothing(index_elements=[OndemandJob.key])
        ).rowcount
        if not inserted:
            inserted = session.execute(
                update(OndemandJob)
                .where(
                    OndemandJob.key == key,
                    or_(OndemandJob.status != RUNNING, OndemandJob.expires_at < now),
                )
                .values(
                    status=RUNNING,
                    owner=owner,
                    started_at=now,
                    expires_at=expires,
                    finished_at=None,
                    face_id=None,
                    strategy=None,
                )
            ).rowcount
        session.commit()
    return bool(inserted)


def mark_started(factory: sessionmaker[Session], key: str, owner: str, strategy: str) -> None:
    """Count a generation run for ``key`` (the claimant found nothing stored and generates)."""
    with factory() as session:
        session.execute(
            update(OndemandJob)
            .where(OndemandJob.key == key, OndemandJob.owner == owner)
            .values(runs=OndemandJob.runs + 1, strategy=strategy)
        )
        session.commit()


def finish(
    factory: sessionmaker[Session],
    key: str,
    owner: str,
    *,
    face_id: int | None,
    strategy: str | None,
) -> None:
    """Record the outcome of ``owner``'s run (only if it still holds the claim)."""
    with factory() as session:
        session.execute(
            update(OndemandJob)
            .where(OndemandJob.key == key, OndemandJob.owner == owner)
            .values(
                status=DONE if face_id is not None else FAILED,
                face_id=face_id,
                strategy=strategy,
                finished_at=utcnow(),
            )
        )
        session.commit()


@dataclass(frozen=True)
class Outcome:
    """What a joiner learnt: the run's status and face (None while still running)."""

    status: str
    face_id: int | None


def wait(
    factory: sessionmaker[Session],
    key: str,
    deadline: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Poll the job row until its run finishes or ``deadline`` (monotonic) passes."""
    while True:
        with factory() as session:
            row = session.execute(
                select(OndemandJob.status, OndemandJob.face_id).where(OndemandJob.key == key)
            ).first()
        if row is None:
            return Outcome(FAILED, None)
        if row.status != RUNNING:
            return Outcome(row.status, row.face_id)
        if clock() >= deadline:
            return Outcome(RUNNING, None)
        sleep(POLL_SECONDS)


def job_runs(factory: sessionmaker[Session], key: str) -> int:
    """How many generation runs were ever started for ``key`` (benchmarks, tests)."""
    with factory() as session:
        return int(session.scalar(select(OndemandJob.runs).where(OndemandJob.key == key)) or 0)


# --- backfill requests (states and reasons: ``ingest.ondemand.ports``) -------------------


def request_backfill(
    factory: sessionmaker[Session],
    gender: str | None,
    minimum_age: int,
    maximum_age: int,
    reason: str,
) -> None:
    """Count one more ask for this filter and (re)queue it for the worker.

    Best effort: a database error is logged, never turned into a failed request.
    """
    key = filter_key(gender, minimum_age, maximum_age)
    now = utcnow()
    try:
        with factory() as session:
            insert = _insert(session)
            stmt = insert(BackfillRequest).values(
                key=key,
                gender=gender,
                minimum_age=minimum_age,
                maximum_age=maximum_age,
                reason=reason,
                requests=1,
                status=PENDING,
                attempts=0,
                admitted=0,
                first_requested_at=now,
                last_requested_at=now,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[BackfillRequest.key],
                set_={
                    "requests": BackfillRequest.requests + 1,
                    "reason": reason,
                    "status": PENDING,
                    "last_requested_at": now,
                },
            )
            session.execute(stmt)
            session.commit()
    except Exception:
        logger.warning("could not record a backfill request for %s", key, exc_info=True)


def pending_backfills(factory: sessionmaker[Session], limit: int) -> list[BackfillRequest]:
    """The most requested pending filters first."""
    with factory() as session:
        return list(
            session.scalars(
                select(BackfillRequest)
                .where(BackfillRequest.status == PENDING)
                .order_by(BackfillRequest.requests.desc(), BackfillRequest.first_requested_at)
                .limit(limit)
            )
        )


def settle_backfill(
    factory: sessionmaker[Session], key: str, *, status: str, admitted: int
) -> None:
    """Record a backfill attempt's outcome."""
    with factory() as session:
        session.execute(
            update(BackfillRequest)
            .where(BackfillRequest.key == key)
            .values(
                status=status,
                attempts=BackfillRequest.attempts + 1,
                admitted=BackfillRequest.admitted + admitted,
                fulfilled_at=utcnow() if status == FULFILLED else None,
            )
        )
        session.commit()
