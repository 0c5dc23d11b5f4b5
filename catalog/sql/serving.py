"""Per-process serving state: cached cell counts, faces drawn ahead, buffered counters.

They exist so a random pick costs, on average, a fraction of one indexed SELECT and no
write on the request path (README, "Benchmark"). Each web process (gunicorn worker) gets
its own, created on first use after the fork; nothing here is shared between processes
except through the database.
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import datetime

from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from catalog.services import provide_service, services
from catalog.sql.cells import CellCache, Filters
from catalog.sql.db import get_engine
from catalog.sql.models import utcnow
from catalog.sql.selection import record_served

logger = logging.getLogger(__name__)


class ServedRecorder:
    """Counts servings in memory and writes them in one batch every ``interval`` seconds.

    Why a batch rather than an UPDATE per request: the write was half the database work
    of serving a face, and it made concurrent requests for the same face queue on its row
    lock. Batched, a face served 50 times in a second costs one UPDATE. What it costs:
    a crash loses at most ``interval`` seconds of counting (a graceful exit flushes), and
    another process sees a serving up to ``interval`` late. ``pending_since`` keeps the
    JSON's "previous serving time" exact within the process. ``interval`` 0 writes
    through on every call instead (and needs no thread).
    """

    def __init__(self, engine: Engine, interval: float) -> None:
        self.engine = engine
        self.interval = interval
        self.pid = os.getpid()
        self._pending: dict[int, tuple[int, datetime]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, face_ids: Iterable[int], when: datetime | None = None) -> None:
        """Count one serving of each face at ``when`` (now by default)."""
        when = when or utcnow()
        if self.interval <= 0:
            self._write({face_id: (1, when) for face_id in face_ids})
            return
        with self._lock:
            for face_id in face_ids:
                count, _ = self._pending.get(face_id, (0, when))
                self._pending[face_id] = (count + 1, when)
        if self._thread is None:
            self._start()

    def pending_since(self, face_id: int) -> datetime | None:
        """When this process last served the face without having written it yet."""
        entry = self._pending.get(face_id)
        return entry[1] if entry else None

    def flush(self) -> int:
        """Write everything pending now; returns how many faces were written."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if batch and not self._write(batch):
            with self._lock:  # keep the counts for the next attempt
                for face_id, (count, when) in batch.items():
                    newer_count, newer_when = self._pending.get(face_id, (0, when))
                    self._pending[face_id] = (count + newer_count, max(when, newer_when))
            return 0
        return len(batch)

    def close(self) -> None:
        """Stop the flusher thread and write what is left (at exit, at app teardown)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.flush()

    def _write(self, batch: dict[int, tuple[int, datetime]]) -> bool:
        try:
            record_served(self.engine, batch)
        except SQLAlchemyError:
            # Counting is best effort: a database hiccup must not fail serving.
            logger.warning("could not record servings of %d faces", len(batch), exc_info=True)
            return False
        return True

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="facecat-served-flush", daemon=True
            )
            self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


class DrawAhead:
    """Faces drawn ahead per filter: one SELECT fetches ``size`` random faces, and the
    next ``size - 1`` requests for the same filter are served from memory.

    Why: the slot seek is the database round trip of a pick, and with SQLAlchemy's
    statement handling it was the largest part of serving a face. Drawing ``size``
    distinct positions at once (``pick_random(count=size)``) costs one round trip, and
    every face handed out is still a uniform draw from the filter's faces (a random
    permutation of a uniform sample, taken one by one). What it costs, bounded by
    ``max_age`` (FACECAT_CELL_CACHE_SECONDS, the same staleness the cell counts already
    have): faces added since the draw wait up to ``max_age`` to be picked, and the
    ``last_served`` of a drawn face misses servings by other processes in that window,
    as it already may through ``ServedRecorder``. Rows are only deleted by a person
    (``remove_face``); such a face may still be handed out for ``max_age``. At most
    ``max_filters`` filters are kept, least recently used dropped first, so memory is
    bounded whatever filters clients send. ``size`` 1 or ``max_age`` 0 turns it off.
    """

    def __init__(self, size: int, max_age: float, max_filters: int = 512) -> None:
        self.size = size
        self.max_age = max_age
        self.max_filters = max_filters
        self._drawn: OrderedDict[Filters, tuple[float, list]] = OrderedDict()  # type: ignore[type-arg]
        self._lock = threading.Lock()

    def take(self, filters: Filters, draw: Callable[[int], list]) -> object | None:  # type: ignore[type-arg]
        """One face for ``filters``: from memory when fresh, else ``draw(size)``'s first.

        ``draw(n)`` returns up to ``n`` distinct uniform faces in random order; None when
        it returns none (never remembered: an empty answer is always re-checked).
        """
        if self.size <= 1 or self.max_age <= 0:
            faces = draw(1)
            return faces[0] if faces else None
        now = time.monotonic()
        with self._lock:
            entry = self._drawn.get(filters)
            if entry is not None:
                drawn_at, faces = entry
                if faces and now - drawn_at < self.max_age:
                    self._drawn.move_to_end(filters)
                    return faces.pop()
                del self._drawn[filters]
        faces = draw(self.size)
        if not faces:
            return None
        first = faces.pop()
        with self._lock:
            self._drawn[filters] = (now, faces)
            self._drawn.move_to_end(filters)
            while len(self._drawn) > self.max_filters:
                self._drawn.popitem(last=False)
        return first

    def clear(self) -> None:
        """Forget every drawn face (the catalog changed under this process)."""
        with self._lock:
            self._drawn.clear()


def init_app(app: Flask) -> None:
    """Provide this process's random picks, cell counts, faces drawn ahead, serving counter.

    Per process: each holds what one worker saw or counted, and the recorder's flush
    thread does not survive a fork.
    """
    config = app.config
    # Seeded from the OS in each process: a Random() made before the fork would give every
    # pre-forked gunicorn worker the same picks, and SystemRandom costs a syscall per draw.
    provide_service(app, random.Random, lambda: random.Random(os.urandom(32)), per_process=True)
    provide_service(
        app, CellCache, lambda: CellCache(config["CELL_CACHE_SECONDS"]), per_process=True
    )
    provide_service(
        app,
        DrawAhead,
        lambda: DrawAhead(config["DRAW_AHEAD"], config["CELL_CACHE_SECONDS"]),
        per_process=True,
    )
    provide_service(
        app,
        ServedRecorder,
        lambda: ServedRecorder(get_engine(app), config["SERVED_FLUSH_SECONDS"]),
        per_process=True,
    )


def shutdown(app: Flask) -> None:
    """Flush and stop this process's recorder (tests and graceful shutdowns)."""
    recorder = services(app).discard(ServedRecorder)
    if recorder is not None:
        recorder.close()
