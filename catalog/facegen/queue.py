"""The look-alike job queue: huey, on a SQLite file by default and on Redis in production.

huey because it runs on both shapes facecat has (the embedded SQLite default needs no
server; production shares Redis with the rate limits), retries and schedules tasks with a
delay (webhook backoff), and runs periodic tasks (expiry) in the same consumer.
``facecat facegen worker`` is that consumer; the web process only enqueues.

Tasks close over the app (each needs its database and storage), so the queue is built per
app and found as a service: ``find_service(FacegenQueue)``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask
from huey import Huey, MemoryHuey, RedisHuey, SqliteHuey, crontab

from catalog.facegen import tasks
from catalog.services import provide_service

logger = logging.getLogger(__name__)


def make_huey(url: str | None, instance_path: str, name: str = "facecat-facegen") -> Huey:
    """The huey for ``FACEGEN_QUEUE_URL``: unset (a SQLite file in the instance folder),
    ``sqlite:///path``, ``redis://...`` or ``memory://`` (one process only: tests)."""
    if url is None:
        os.makedirs(instance_path, exist_ok=True)
        return SqliteHuey(name, filename=os.path.join(instance_path, "facegen-queue.db"))
    if url.startswith("sqlite:///"):
        return SqliteHuey(name, filename=url.removeprefix("sqlite:///") or ":memory:")
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(name, url=url)
    if url == "memory://":
        return MemoryHuey(name)
    raise ValueError(f"FACEGEN_QUEUE_URL must be sqlite:///, redis:// or memory://, got {url!r}")


class FacegenQueue:
    """The app's huey with facecat's three tasks registered on it."""

    def __init__(self, app: Flask, huey: Huey) -> None:
        self.huey = huey

        def in_app(function: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
            def run(*args: Any) -> Any:
                with app.app_context():
                    return function(*args, *bound)

            run.__name__ = function.__name__
            return run

        self._run = huey.task(name="facegen.run")(in_app(tasks.run_job, self.webhook))
        self._webhook = huey.task(name="facegen.webhook")(
            in_app(tasks.deliver_webhook, self.webhook)
        )
        huey.periodic_task(crontab(minute="*"), name="facegen.expire")(in_app(tasks.expire_jobs))

    def submit(self, job_id: str) -> None:
        """Queue the job for the worker."""
        self._run(job_id)

    def webhook(self, job_id: str, attempt: int, delay: float = 0.0) -> None:
        """Queue delivery ``attempt`` of the job's webhook, after ``delay`` seconds."""
        if delay > 0:
            self._webhook.schedule(args=(job_id, attempt), delay=delay)
        else:
            self._webhook(job_id, attempt)

    def pending(self) -> int:
        """Messages waiting in the queue (the /metrics gauge, the eta)."""
        return int(self.huey.pending_count())

    def drain(self) -> int:
        """Run every queued task in this process, as a consumer would; return how many.

        For tests and benchmarks: no threads, no signals.
        """
        done = 0
        while (task := self.huey.dequeue()) is not None:
            self.huey.execute(task)
            done += 1
        return done


def init_app(app: Flask) -> None:
    """Provide the app's queue and look-alike studio, each built on first use: web
    workers start without either, and only the worker ever loads the models."""

    def make_queue() -> FacegenQueue:
        config = app.config
        huey = make_huey(
            config["FACEGEN_QUEUE_URL"], app.instance_path, config["FACEGEN_QUEUE_NAME"]
        )
        return FacegenQueue(app, huey)

    def make_studio() -> tasks.Lookalikes:
        from ingest.facegen.lookalikes import studio_for

        return studio_for(app.config)  # type: ignore[no-any-return]

    provide_service(app, FacegenQueue, make_queue, per_process=True)
    provide_service(app, tasks.Lookalikes, make_studio)
