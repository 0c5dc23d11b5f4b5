"""The ingest worker: the ingest job on an APScheduler interval, in its own process.

One job, ``max_instances=1`` (a run never overlaps the previous one in this process) and
``coalesce=True`` (runs missed while one was slow collapse into one). Several worker
processes may share one catalog: each run takes the insert lock and re-checks band room
inside its insert transaction (``ingest.pipeline``), so together they neither overfill a
band nor count a face twice; they only duplicate generation work, which is why one
worker per GPU is the intended deployment.

Signals: the first SIGTERM or SIGINT lets the batch in hand finish (its rows are
committed, the run is recorded ``interrupted``) and then exits 0; a second one abandons
the batch at once (exit 130): its uploaded objects become orphans for ``facecat catalog
fsck --delete-orphans``, and no row can point at a missing object because rows are
committed only after their objects. Never runs inside web workers.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger

from ingest.pipeline.reports import IngestReport

logger = logging.getLogger(__name__)

JOB_ID = "ingest"


def build_scheduler(job: Callable[[], Any], interval_seconds: float) -> BaseScheduler:
    """A background scheduler with the ingest job: no overlap, misfires coalesced.

    The first run starts at once, so a fresh worker fills an empty catalog without
    waiting an interval; ``misfire_grace_time`` of one interval lets a run that starts
    late (the previous one was slow) still happen, once.
    """
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        job,
        IntervalTrigger(seconds=interval_seconds),
        id=JOB_ID,
        name="ingest",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=max(int(interval_seconds), 1),
        next_run_time=datetime.now().astimezone(),
    )
    return scheduler


def _before_ingest(what: str, step: Callable[..., Any], *args: Any) -> None:
    """Run a step that precedes the ingest run; its failure is logged, never fatal."""
    try:
        step(*args)
    except Exception:
        logger.exception("%s failed; ingest goes on", what)


class IngestWorker:
    """Runs ``run_once(stop)`` on an interval until told to stop.

    ``run_once`` receives the stop event and must return promptly once it is set (the
    pipeline checks it between batches). ``is_full`` lets a worker rest while every band
    is at target instead of generating faces only to reject them ``band_full``.
    ``backfill``, if given, runs first in every job: it fills the filters users asked for
    and did not get (on-demand 404s and slow hits, ``ingest.ondemand``), which matter more
    than the band targets and are served even when every band is full.
    ``housekeeping``, if given, runs before that: the catalog's upkeep (the avatar cache
    is kept under its cap), cheap next to a run and needed even while ingest rests.
    """

    def __init__(
        self,
        run_once: Callable[[threading.Event], IngestReport],
        *,
        interval_seconds: float,
        is_full: Callable[[], bool] = lambda: False,
        backfill: Callable[[threading.Event], Any] | None = None,
        housekeeping: Callable[[], Any] | None = None,
    ) -> None:
        self.run_once = run_once
        self.backfill = backfill
        self.housekeeping = housekeeping
        self.interval_seconds = interval_seconds
        self.is_full = is_full
        self.stop = threading.Event()
        self.runs = 0
        self.scheduler = build_scheduler(self.job, interval_seconds)
        self._signals = 0
        # Set while no job runs: ``run`` waits on it with a timeout at shutdown.
        self._idle = threading.Event()
        self._idle.set()

    def job(self) -> None:
        """One scheduled run; errors are logged, never kill the scheduler."""
        self._idle.clear()
        try:
            self._job()
        finally:
            self._idle.set()

    def _job(self) -> None:
        if self.stop.is_set():
            return
        if self.housekeeping is not None:
            _before_ingest("housekeeping", self.housekeeping)
        if self.backfill is not None:
            _before_ingest("backfill", self.backfill, self.stop)
        try:
            if self.is_full():
                logger.info("every band is at its target; skipping this run")
                return
            report = self.run_once(self.stop)
            self.runs += 1
            logger.info("worker run finished: %s", report.summary().splitlines()[0])
        except Exception:
            logger.exception(
                "ingest run failed; the next one starts in %s s", self.interval_seconds
            )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info(
                "%s: finishing the current batch, then exiting (again to abandon it)",
                signal.Signals(signum).name,
            )
            self.stop.set()
            return
        logger.warning("second signal: abandoning the current batch")
        # Skips finalisers on purpose: objects already uploaded become orphans for fsck;
        # rows are committed only after their objects, so none can dangle.
        os._exit(130)

    def run(self, install_signals: bool = True) -> int:
        """Block until stopped (a signal, or ``stop`` set by the caller); return 0."""
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            # A shell starts background jobs with SIGINT ignored (``make run`` does): then
            # Ctrl-C is meant for the foreground server, and the worker waits for the
            # SIGTERM it is sent afterwards instead of counting Ctrl-C as a first signal.
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
                signal.signal(signal.SIGINT, self._on_signal)
            # Only the main thread runs Python signal handlers, and the kernel may hand a
            # signal to any thread: one taken by another thread waits until the main
            # thread runs bytecode (``finally`` below waits in timed steps for that).
            # Threads inherit the signal mask, so the scheduler's threads, started with
            # these blocked, never take them and signals reach the main thread at once.
            previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
            try:
                self.scheduler.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        else:
            self.scheduler.start()
        logger.info("ingest worker started: a run every %s s", self.interval_seconds)
        try:
            while not self.stop.wait(1.0):
                pass
        finally:
            self.stop.set()
            # No new jobs; the running one sees ``stop`` and finishes its batch first. It
            # is waited for in one-second steps, not an untimed join, so the main thread
            # runs bytecode at least once a second and a second signal, whichever thread
            # the kernel gave it to, is handled while a batch hangs.
            self.scheduler.shutdown(wait=False)
            while not self._idle.wait(1.0):
                pass
            logger.info("ingest worker stopped after %d runs", self.runs)
        return 0
