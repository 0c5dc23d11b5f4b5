"""``facecat facegen``: the worker that runs look-alike jobs, and expiry by hand."""

from __future__ import annotations

import logging

import click
from flask import current_app
from flask.cli import AppGroup

from catalog.facegen.queue import FacegenQueue
from catalog.services import find_service

facegen_cli = AppGroup("facegen", help="Run look-alike (face_gen) jobs and expire their outputs.")


@facegen_cli.command("worker")
@click.option("--workers", type=click.IntRange(1, 16), default=1, help="Jobs run at once.")
def worker_command(workers: int) -> None:
    """Run queued jobs, webhook deliveries and expiry until SIGTERM or Ctrl-C.

    One job at a time by default: a job uses every core the models are given.
    Example: ``facecat facegen worker``.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    queue = find_service(FacegenQueue)
    consumer = queue.huey.create_consumer(workers=workers, periodic=True, check_worker_health=True)
    consumer.run()


@facegen_cli.command("expire")
def expire_command() -> None:
    """Remove outputs past FACEGEN_TTL_SECONDS now (the worker does it every minute)."""
    from catalog.facegen.tasks import expire_jobs

    with current_app.app_context():
        click.echo(f"{expire_jobs()} jobs expired or ended")
