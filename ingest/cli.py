"""``facecat ingest``: a one-shot run with a progress bar, and the scheduled worker.

Commands only parse options and assemble the pieces (models, storage, catalog,
settings); the work is ``ingest.pipeline.run_ingest`` and ``ingest.scheduling``. The app's
catalog rows and object storage come from the factories the catalog registered on the
app (``ingest.services``), so this module imports nothing from ``catalog``; the CLI
imports it only when a ``facecat ingest`` command runs (``catalog.cli.LazyCommand``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from ingest.command_models import load_models
from ingest.pipeline import run_ingest
from ingest.pipeline.reports import BatchOutcome, IngestReport
from ingest.scheduling import IngestWorker
from ingest.services import get_services, require_current_schema
from ingest.settings import IngestSettings

if TYPE_CHECKING:  # torch is imported only when a command loads the models
    from analysis.types import AgeGenderEstimator
    from ingest.generators import Generator

logger = logging.getLogger(__name__)

ingest_cli = AppGroup("ingest", help="Generate, annotate, gate and store faces.")

# Without --count, --if-empty generates at most this many times INGEST_SEED_COUNT while
# trying to admit INGEST_SEED_COUNT faces (about 4 in 10 generated faces pass).
SEED_GENERATION_FACTOR = 10


def catalog_size(app: Flask) -> int:
    """Faces in the catalog, from the per-cell counters."""
    with get_services(app).catalog().read() as view:
        return sum(view.band_counts().values())


def catalog_is_full(app: Flask, settings: IngestSettings) -> bool:
    """Whether every band with a target has reached it."""
    from ingest.curation import curator_for

    with get_services(app).catalog().read() as view:
        counts = view.band_counts()
    return curator_for(counts, settings.composition, settings.target_size).is_full()


def ingest_once(
    app: Flask,
    count: int,
    *,
    generator: Generator,
    estimator: AgeGenderEstimator,
    settings: IngestSettings,
    trigger: str,
    stop: threading.Event | None = None,
    max_admitted: int | None = None,
    progress: Callable[[BatchOutcome], None] | None = None,
) -> IngestReport:
    """``run_ingest`` with the app's storage and database; its yields feed on-demand planning.

    With style directions for the generator, each seed is aimed at a cell with room
    (``room_aim``), so rare cells (children, teens, 60+) fill too instead of waiting for
    the 1-in-100 sample that lands there by chance.
    """
    wiring = get_services(app)
    catalog = wiring.catalog()
    steered = _steered_for_room(catalog, generator, settings)
    report = run_ingest(
        count,
        generator=steered or generator,
        estimator=estimator,
        storage=wiring.storage(),
        catalog=catalog,
        settings=settings,
        trigger=trigger,
        stop=stop,
        max_admitted=max_admitted,
        progress=progress,
    )
    try:
        from ingest.ondemand.yields import SAMPLE, ingest_run_updates

        # A steered run is not a sample of the generator's own distribution.
        updates = None if steered is not None else ingest_run_updates(report)
        if updates is not None:
            catalog.record_yields(SAMPLE, updates)
    except Exception:
        logger.warning("could not record the run's yields for on-demand planning", exc_info=True)
    return report


def _steered_for_room(
    catalog: object, generator: Generator, settings: IngestSettings
) -> Generator | None:
    """The generator aimed at the cells with room, or None when it cannot be steered."""
    from ingest.curation import curator_for
    from ingest.ondemand.strategies import SteeredPhotoreal, room_aim
    from ingest.steering import load_steering

    steering = load_steering(generator)
    if steering is None:
        return None
    with catalog.read() as view:  # type: ignore[attr-defined]
        curator = curator_for(view.band_counts(), settings.composition, settings.target_size)
    room = {cell: curator.room(cell) for cell in curator.targets}
    return SteeredPhotoreal(generator, steering, room_aim(room))  # type: ignore[return-value]


@ingest_cli.command("run")
@click.option("--count", type=click.IntRange(1), default=None, help="Faces to generate.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Torch device."
)
@click.option("--batch", type=click.IntRange(1, 4096), default=None, help="Faces per batch.")
@click.option(
    "--max-admitted",
    type=click.IntRange(1),
    default=None,
    help="Stop once this many faces were admitted (emptiest bands first).",
)
@click.option(
    "--if-empty",
    is_flag=True,
    help="Do nothing unless the catalog is empty; then admit INGEST_SEED_COUNT faces "
    "(unless --count/--max-admitted say otherwise).",
)
def run_command(
    count: int | None,
    device: str | None,
    batch: int | None,
    max_admitted: int | None,
    if_empty: bool,
) -> None:
    """Generate COUNT faces once, admit those that pass, print a summary.

    Examples: ``facecat ingest run --count 500``,
    ``facecat ingest run --count 5000 --device cuda --batch 512``,
    ``facecat ingest run --if-empty`` (what ``make run`` does first).
    """
    from tqdm import tqdm

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    require_current_schema(app)
    if if_empty:
        existing = catalog_size(app)
        if existing:
            click.echo(f"catalog already holds {existing} faces; nothing to do")
            return
        seed_count = app.config["INGEST_SEED_COUNT"]
        if seed_count == 0:
            click.echo("INGEST_SEED_COUNT is 0; not seeding")
            return
        if count is None:
            max_admitted = max_admitted or seed_count
            count = max_admitted * SEED_GENERATION_FACTOR
    count = count or app.config["INGEST_COUNT"]
    settings = IngestSettings.from_config(app.config, batch_size=batch)
    generator, estimator = load_models(app, device, settings.batch_size)
    # The bar counts what the run waits for: admissions when it stops at a number of them
    # (seeding: 300 admitted, not the 3,000 it may generate to get there), else faces made.
    by_admission = max_admitted is not None
    totals = {"generated": 0, "admitted": 0}
    with tqdm(
        total=max_admitted if by_admission else count,
        unit="admitted" if by_admission else "face",
        desc="seeding" if if_empty else "ingest",
        dynamic_ncols=True,
    ) as bar:

        def progress(outcome: BatchOutcome) -> None:
            totals["generated"] += outcome.generated
            totals["admitted"] += outcome.admitted
            # The postfix first, without a redraw: update() draws the line once, current.
            if by_admission:
                bar.set_postfix(generated=totals["generated"], refresh=False)
                bar.update(min(outcome.admitted, bar.total - bar.n))
            else:
                bar.set_postfix(admitted=totals["admitted"], refresh=False)
                bar.update(outcome.generated)

        report = ingest_once(
            app,
            count,
            generator=generator,
            estimator=estimator,
            settings=settings,
            trigger="cli",
            max_admitted=max_admitted,
            progress=progress,
        )
    click.echo(report.summary())
    if report.status == "failed":
        raise click.ClickException(report.error or "ingest failed")


def make_worker(
    app: Flask,
    *,
    generator: Generator,
    estimator: AgeGenderEstimator,
    count: int,
    interval_seconds: float,
    settings: IngestSettings,
) -> IngestWorker:
    """An ``IngestWorker`` whose runs ingest ``count`` faces into the app's catalog."""

    def run_once(stop: threading.Event) -> IngestReport:
        return ingest_once(
            app,
            count,
            generator=generator,
            estimator=estimator,
            settings=settings,
            trigger="worker",
            stop=stop,
        )

    def backfill(stop: threading.Event) -> int:
        return int(get_services(app).ondemand().run_backfill(stop=stop))

    return IngestWorker(
        run_once,
        interval_seconds=interval_seconds,
        is_full=lambda: catalog_is_full(app, settings),
        backfill=backfill,
        housekeeping=lambda: get_services(app).housekeeping(),
    )


@ingest_cli.command("worker")
@click.option(
    "--interval",
    type=click.IntRange(1),
    default=None,
    help="Seconds between runs (INGEST_INTERVAL_SECONDS).",
)
@click.option("--count", type=click.IntRange(1), default=None, help="Faces per run (INGEST_COUNT).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--batch", type=click.IntRange(1, 4096), default=None, help="Faces per batch.")
def worker_command(
    interval: int | None, count: int | None, device: str | None, batch: int | None
) -> None:
    """Run ingest on an interval until SIGTERM (first: finish the batch; second: abandon).

    Example: ``facecat ingest worker --interval 300 --count 256``.
    """
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    require_current_schema(app)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = IngestSettings.from_config(app.config, batch_size=batch)
    generator, estimator = load_models(app, device, settings.batch_size)
    worker = make_worker(
        app,
        generator=generator,
        estimator=estimator,
        count=count or app.config["INGEST_COUNT"],
        interval_seconds=interval or app.config["INGEST_INTERVAL_SECONDS"],
        settings=settings,
    )
    raise SystemExit(worker.run())


def _add_ondemand_commands() -> None:
    """``facecat ingest measure-yields`` and ``facecat ingest backfill`` (ingest.ondemand)."""
    from ingest.ondemand.cli import backfill_command, measure_yields_command

    ingest_cli.add_command(measure_yields_command)
    ingest_cli.add_command(backfill_command)


def _add_steering_commands() -> None:
    """``facecat ingest fit-directions`` (ingest.steering.commands)."""
    from ingest.steering.commands import calibrate_steering_command, fit_directions_command

    ingest_cli.add_command(fit_directions_command)
    ingest_cli.add_command(calibrate_steering_command)


_add_ondemand_commands()
_add_steering_commands()
