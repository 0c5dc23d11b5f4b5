"""The SQL side of ingest: ``SqlIngestCatalog`` implements ``ingest.ports.IngestCatalog``.

The ingest pipeline decides which faces get in (gates, curation, the re-check under the
lock); this module is where those decisions meet the tables: band counts from the
``face_cell`` counters, seeds and perceptual hashes from ``face``, run records in
``ingest_run``, rows inserted through ``selection.add_face`` (the only writer of slots),
and the cross-process locks of ``catalog.sql.locking``. It wraps a sessionmaker, so the web
app, the CLI, a worker process and the tests can each give it theirs.

Database errors become ``ingest.ports.CatalogError`` only where the port says ingest
recovers from them (the admission transaction, ``existing``, ``finish_run``); everywhere
else SQLAlchemy's own exception propagates unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import fields
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from catalog.sql.cells import all_cells, counts_by_band
from catalog.sql.locking import lock_inserts, object_writes
from catalog.sql.models import Face, IngestRun, utcnow
from catalog.sql.selection import add_face
from ingest.ports import CatalogError, FaceRecord, RunCounts

logger = logging.getLogger(__name__)

_RECORD_FIELDS = tuple(f.name for f in fields(FaceRecord))


def band_counts(session: Session) -> dict[str, int]:
    """Faces per ``gender:band`` cell now (non-empty cells only), from the per-age
    ``FaceCell`` counters."""
    return {f"{g}:{b}": n for (g, b), n in counts_by_band(all_cells(session)).items() if n}


def face_from_record(record: FaceRecord) -> Face:
    """The ``Face`` row for a record, stamped with the time it is added."""
    return Face(**{name: getattr(record, name) for name in _RECORD_FIELDS}, date_added=utcnow())


class SqlCatalogView:
    """``ingest.ports.CatalogView`` over any session (reads in its transaction)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def band_counts(self) -> dict[str, int]:
        return band_counts(self.session)

    def seen_seeds(self, generator_checksum: str, seeds: Sequence[int]) -> set[int]:
        seeds = list(seeds)
        if not seeds:
            return set()
        rows = self.session.execute(
            select(Face.seed).where(
                Face.generator_checksum == generator_checksum, Face.seed.in_(seeds)
            )
        ).scalars()
        return {int(s) for s in rows}

    def hashes_after(self, last_id: int) -> Sequence[tuple[int, int]]:
        return self.session.execute(  # type: ignore[return-value]
            select(Face.id, Face.phash)
            .where(Face.id > last_id, Face.phash.is_not(None))
            .order_by(Face.id)
        ).all()


class SqlAdmission(SqlCatalogView):
    """``ingest.ports.Admission``: one session that took the insert lock first."""

    def __init__(self, session: Session, catalog: SqlIngestCatalog) -> None:
        super().__init__(session)
        self.catalog = catalog
        self.added: set[str] = set()

    def add(self, record: FaceRecord) -> None:
        add_face(self.session, face_from_record(record))
        self.added.add(record.filename)

    def update_run(self, run_id: int, counts: RunCounts) -> None:
        _update_run(self.session, run_id, counts)

    def commit(self) -> None:
        try:
            self.session.commit()
        except SQLAlchemyError:
            if not self.added or not self.catalog.all_present(self.added):
                raise
            # The server committed and the reply was lost: the batch went through.
            logger.warning("commit reported an error, but the batch's rows are in")


def _update_run(session: Session, run_id: int, counts: RunCounts) -> None:
    session.execute(
        update(IngestRun)
        .where(IngestRun.id == run_id)
        .values(
            generated=counts.generated,
            admitted=counts.admitted,
            rejected=dict(counts.rejected),
            heartbeat_at=utcnow(),
        )
    )


class SqlIngestCatalog:
    """``ingest.ports.IngestCatalog`` on the catalog's database, through ``session_factory``."""

    def __init__(
        self, session_factory: sessionmaker[Session], stale_run_seconds: float = 900.0
    ) -> None:
        self.session_factory = session_factory
        self.stale_run_seconds = stale_run_seconds

    @contextmanager
    def read(self) -> Iterator[SqlCatalogView]:
        """A session for the pipeline's reads before it uploads."""
        with self.session_factory() as session:
            yield SqlCatalogView(session)

    @contextmanager
    def admission(self) -> Iterator[SqlAdmission]:
        """A session holding the insert lock; database errors become ``CatalogError``."""
        try:
            with self.session_factory() as session:
                lock_inserts(session)
                yield SqlAdmission(session, self)
        except SQLAlchemyError as exc:
            raise CatalogError(str(exc)) from exc

    def object_writes(self) -> AbstractContextManager[None]:
        """The shared object-writes lock (``catalog.sql.locking.object_writes``)."""
        return object_writes(self.session_factory.kw["bind"])

    def start_run(self, *, trigger: str, device: str, generator: str, requested: int) -> int:
        """Insert a ``running`` run row and return its id; first mark runs whose process
        died (``running``, no counts written for ``stale_run_seconds``) as ``died``.

        A SIGKILLed or crashed process cannot record its own end, and nobody else knows it
        is gone except by its silence: runs write their counts after every batch.
        """
        with self.session_factory() as session:
            now = utcnow()
            silent_since = now - timedelta(seconds=self.stale_run_seconds)
            died = session.execute(
                update(IngestRun)
                .where(
                    IngestRun.status == "running",
                    func.coalesce(IngestRun.heartbeat_at, IngestRun.started_at) < silent_since,
                )
                .values(
                    status="died",
                    error="no progress recorded for "
                    f"{self.stale_run_seconds:.0f} s: the process running it stopped without "
                    "recording its end",
                )
            )
            if died.rowcount:
                logger.warning("marked %d silent ingest run(s) as died", died.rowcount)
            run = IngestRun(
                trigger=trigger,
                status="running",
                started_at=now,
                heartbeat_at=now,
                device=device,
                generator=generator,
                requested=requested,
                rejected={},
            )
            session.add(run)
            session.commit()
            return run.id

    def update_run(self, run_id: int, counts: RunCounts) -> None:
        """Set the run's totals and commit."""
        with self.session_factory() as session:
            _update_run(session, run_id, counts)
            session.commit()

    def finish_run(
        self,
        run_id: int,
        counts: RunCounts,
        *,
        status: str,
        faces_per_second: float,
        error: str | None,
    ) -> None:
        """Write the run's final status, totals and speed."""
        try:
            with self.session_factory() as session:
                session.execute(
                    update(IngestRun)
                    .where(IngestRun.id == run_id)
                    .values(
                        status=status,
                        finished_at=utcnow(),
                        generated=counts.generated,
                        admitted=counts.admitted,
                        rejected=dict(counts.rejected),
                        faces_per_second=faces_per_second,
                        error=error,
                    )
                )
                session.commit()
        except SQLAlchemyError as exc:
            raise CatalogError(str(exc)) from exc

    def existing(self, filenames: Iterable[str]) -> set[str]:
        """Which of ``filenames`` have a row."""
        try:
            with self.session_factory() as session:
                return set(
                    session.execute(
                        select(Face.filename).where(Face.filename.in_(set(filenames)))
                    ).scalars()
                )
        except SQLAlchemyError as exc:
            raise CatalogError(str(exc)) from exc

    def all_present(self, filenames: set[str]) -> bool:
        """Whether every one of ``filenames`` has a row (False if that cannot be read)."""
        try:
            with self.session_factory() as session:
                found = session.scalar(
                    select(func.count()).select_from(Face).where(Face.filename.in_(filenames))
                )
        except SQLAlchemyError:
            return False
        return found == len(filenames)
