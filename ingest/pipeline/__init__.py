"""The ingest pipeline: seeds → latents → faces → estimates → gates → images → storage → rows.

``run_ingest`` generates ``count`` faces in batches. Per batch:

1. *prepare* (main thread, the models): draw fresh seeds, sample latents, generate the
   native images, estimate age and gender;
2. *select* (main thread, cheap): quality gates, the idempotency check on seed +
   generator checksum, and curation against the band targets;
3. *store* (a background thread, overlapping the next batch's *prepare*): encode the
   original and the thumbnail, upload both (retrying ``ObjectStoreError`` with
   exponential backoff), then insert the rows **last**, in one transaction that takes
   the insert lock and re-checks band room, seeds and duplicates against what other
   workers committed meanwhile.

Why this order: an object without a row is an orphan that ``facecat catalog fsck
--delete-orphans`` removes; a row without its object is a broken image URL served to
users. So objects are written first, rows are committed only after every object of the
batch is stored, and objects are deleted only when no row references them. A crash at
any point leaves at worst orphans. Counts are written in the same transaction as the
rows, so a run's record never counts a face the catalog does not have.

The pipeline decides; the catalog stores. Objects go through an ``ObjectStore`` and rows
through an ``IngestCatalog`` (``ingest.ports``), which ``catalog`` implements with its
storage backends and SQL (``catalog.sql.admission``): ingest never imports ``catalog``.

Modules: ``reports`` (what a run and each batch came to, and why faces were turned
away), ``selection`` (the gates the *select* stage runs and the values that pass between
the stages), ``stages`` (the three stages, as one run's state). This module drives them:
``run_ingest`` draws the seeds, overlaps the stages and records the run's end.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from ingest.gates import Gate, HashIndex
from ingest.pipeline.reports import ABANDONED, BatchFailed, BatchOutcome, IngestReport
from ingest.pipeline.selection import _Prepared
from ingest.pipeline.stages import _Run
from ingest.ports import CatalogError, IngestCatalog, ObjectStore, RunCounts
from ingest.settings import IngestSettings

if TYPE_CHECKING:  # torch-backed protocols; the web app imports this module without torch
    from analysis.types import AgeGenderEstimator
    from ingest.generators import Generator

logger = logging.getLogger(__name__)

SEED_BITS = 63  # fits a signed BIGINT; collisions need ~3·10^9 faces for even odds


def draw_seeds(n: int) -> list[int]:
    """``n`` distinct 63-bit seeds from the OS's CSPRNG.

    Several workers draw independently without coordination; with 63 random bits a
    collision is as unlikely as a hash collision, and if one happened the idempotency
    check on seed + generator checksum would skip it.
    """
    seeds: dict[int, None] = {}
    while len(seeds) < n:
        seeds.setdefault(secrets.randbits(SEED_BITS))
    return list(seeds)


def _finish_run(catalog: IngestCatalog, report: IngestReport) -> None:
    """Write the run's final status and speed; a database that is down is only logged."""
    if report.run_id is None:
        return
    try:
        catalog.finish_run(
            report.run_id,
            RunCounts(report.generated, report.admitted, dict(report.rejected)),
            status=report.status,
            faces_per_second=round(report.faces_per_second, 3),
            error=report.error,
        )
    except CatalogError:
        logger.exception("could not record the end of ingest run %s", report.run_id)


def run_ingest(
    count: int,
    *,
    generator: Generator,
    estimator: AgeGenderEstimator,
    storage: ObjectStore,
    catalog: IngestCatalog,
    settings: IngestSettings,
    trigger: str = "cli",
    progress: Callable[[BatchOutcome], None] | None = None,
    stop: threading.Event | None = None,
    seeds: Sequence[int] | None = None,
    max_admitted: int | None = None,
    gates: Sequence[Gate] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    enough: Callable[[], bool] | None = None,
) -> IngestReport:
    """Generate ``count`` faces and admit those that pass the gates and curation.

    :param storage: where the images go (``catalog.storage`` backends fit).
    :param catalog: where the rows go (``catalog.sql.admission.SqlIngestCatalog``).
    :param seeds: use these seeds instead of fresh random ones (``len(seeds) == count``);
        seeds already ingested with the same weights are skipped (``already_ingested``).
    :param stop: set it (SIGTERM) to finish the batch in hand and stop.
    :param max_admitted: stop once this many faces were admitted this run.
    :param gates: replaces the default gate list (``ingest.gates.default_gates``).
    :param progress: called with each batch's outcome once it is stored.
    :param enough: asked after each batch; True ends the run as ``completed`` (it got
        what it was for), where ``stop`` ends it as ``interrupted``.
    :returns: the report; ``status`` is ``completed``, ``interrupted`` or ``failed``
        (a batch was given up; ``error`` says why). Exceptions from the models or the
        database at the start propagate after the run is recorded as failed.
    """
    if count < 0:
        raise ValueError("count must be ≥ 0")
    if seeds is not None and len(seeds) != count:
        raise ValueError(f"got {len(seeds)} seeds for count={count}")
    report = IngestReport(trigger=trigger, device=str(generator.device), requested=count)
    report.run_id = catalog.start_run(
        trigger=trigger, device=report.device, generator=generator.name, requested=count
    )
    run = _Run(
        generator=generator,
        estimator=estimator,
        storage=storage,
        catalog=catalog,
        settings=settings,
        gates=gates,
        index=HashIndex(),
        report=report,
        sleep=sleep,
    )
    stop = stop or threading.Event()
    started = time.perf_counter()
    in_flight: Future[None] | None = None
    in_flight_outcome: BatchOutcome | None = None
    in_flight_admits = 0
    done = 0
    logger.info(
        "ingest run %s: %d faces in batches of %d on %s",
        report.run_id,
        count,
        settings.batch_size,
        report.device,
    )

    def settle() -> None:
        """Wait for the batch being stored and fold its outcome into the report."""
        nonlocal in_flight, in_flight_outcome, in_flight_admits
        if in_flight is None:
            return
        future, outcome = in_flight, in_flight_outcome
        in_flight, in_flight_outcome, in_flight_admits = None, None, 0
        try:
            future.result()
        finally:
            assert outcome is not None
            report.add(outcome)
            if progress is not None:
                progress(outcome)

    with (
        ThreadPoolExecutor(settings.upload_threads, thread_name_prefix="ingest-io") as pool,
        ThreadPoolExecutor(1, thread_name_prefix="ingest-store") as storer,
    ):
        prepared: _Prepared | None = None
        try:
            satisfied = False
            while done < count and not stop.is_set():
                if enough is not None and enough():
                    satisfied = True
                    break
                limit = None
                if max_admitted is not None:
                    limit = max_admitted - report.admitted - in_flight_admits
                    if limit <= 0:
                        break
                n = min(settings.batch_size, count - done)
                batch_seeds = list(seeds[done : done + n]) if seeds is not None else draw_seeds(n)
                prepared = run.prepare(batch_seeds)
                done += n
                settle()
                if max_admitted is not None:
                    limit = max_admitted - report.admitted
                picks, outcome = run.select(prepared, limit)
                prepared = None
                in_flight_outcome = outcome
                in_flight_admits = len(picks)
                in_flight = storer.submit(run.store, picks, outcome, pool)
                if not settings.overlap:
                    settle()
            settle()
            satisfied = satisfied or (enough is not None and enough())
            interrupted = done < count and stop.is_set() and not satisfied
            report.status = "interrupted" if interrupted else "completed"
        except BatchFailed as exc:
            report.status, report.error = "failed", str(exc)
            logger.error("ingest run %s: %s", report.run_id, exc)
            if prepared is not None:  # generated while the failed batch was stored
                report.add(
                    BatchOutcome(
                        len(prepared.candidates), 0, Counter({ABANDONED: len(prepared.candidates)})
                    )
                )
        except BaseException as exc:
            # Ctrl-C or a model error: let the batch being stored finish cleanly first.
            report.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            report.error = report.error or f"{type(exc).__name__}: {exc}"
            try:
                settle()
            except BatchFailed as failed:
                report.error = str(failed)
            finally:
                _finalise(run, report, started, catalog)
            raise
    _finalise(run, report, started, catalog)
    return report


def _finalise(run: _Run, report: IngestReport, started: float, catalog: IngestCatalog) -> None:
    report.seconds = time.perf_counter() - started
    report.timings = {k: round(v, 3) for k, v in run.timings.items()}
    for gate in run.gates:
        if isinstance(getattr(gate, "passed_cells", None), Counter):
            report.robust_passes.update(gate.passed_cells)  # type: ignore[attr-defined]
            report.robust_checked += int(getattr(gate, "checked", 0))
    _finish_run(catalog, report)
    log = logger.error if report.status == "failed" else logger.info
    log("%s", report.summary())
