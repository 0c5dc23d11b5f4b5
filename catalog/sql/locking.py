"""Cross-process locks that keep several ingest workers (and fsck) from tripping up.

Two locks, both taken through the database so that every process that shares a catalog
shares them, with no extra service. They are database code, so they live in ``catalog``;
the ingest pipeline takes them through ``ingest.ports.IngestCatalog``
(``catalog.sql.admission``), and ``catalog.fsck`` directly:

* ``lock_inserts(session)``: held for the rest of the transaction that inserts a
  batch's rows. Inside it, band counts and seen seeds are re-read and are exact, so two
  workers cannot both admit the last face a band has room for, nor the same seed twice.
  PostgreSQL: a transaction-level advisory lock. SQLite: an (empty) write, which takes
  the database's single write lock at once instead of at the first real insert.
* ``object_writes(engine, exclusive=...)``: held *shared* by an ingest batch from its
  first upload until its rows are committed, and *exclusively* by
  ``facecat catalog fsck --delete-orphans``, so the sweep never deletes the objects of
  a batch whose rows are about to be committed. PostgreSQL: a session-level advisory lock
  on a dedicated connection. SQLite (one machine): ``flock`` on a file beside the
  database.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

# Arbitrary, fixed 63-bit keys ("facecat" in ASCII, plus one) in PostgreSQL's single
# advisory-lock namespace.
INSERT_LOCK_KEY = 0x66616365636174 << 4
OBJECTS_LOCK_KEY = (0x66616365636174 << 4) + 1


def lock_inserts(session: Session) -> None:
    """Serialise catalog inserts across processes until ``session`` commits or rolls back.

    Must be the first statement of the transaction: on SQLite the write lock is what
    makes the reads that follow current.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": INSERT_LOCK_KEY})
    elif dialect == "sqlite":
        # pysqlite opens the transaction before a DML statement, and SQLite takes its
        # write lock when the UPDATE starts, even though the WHERE matches no row.
        session.execute(text("UPDATE face_cell SET n = n WHERE 1 = 0"))
    else:  # pragma: no cover - configuration only admits the two
        raise NotImplementedError(f"no insert lock for {dialect}")


def _sqlite_lock_path(engine: Engine) -> str | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None  # one process owns an in-memory database: nothing to coordinate
    return f"{database}.objects-lock"


@contextmanager
def object_writes(engine: Engine, *, exclusive: bool = False) -> Iterator[None]:
    """Hold the object-writes lock (shared for ingest, exclusive for the orphan sweep)."""
    if engine.dialect.name == "postgresql":
        take, release = (
            ("pg_advisory_lock", "pg_advisory_unlock")
            if exclusive
            else ("pg_advisory_lock_shared", "pg_advisory_unlock_shared")
        )
        connection = engine.connect()
        try:
            connection.execute(text(f"SELECT {take}(:key)"), {"key": OBJECTS_LOCK_KEY})
            connection.commit()
            try:
                yield
            finally:
                try:
                    connection.execute(text(f"SELECT {release}(:key)"), {"key": OBJECTS_LOCK_KEY})
                    connection.commit()
                except Exception:
                    # A connection that cannot unlock must not go back to the pool still
                    # holding the lock; closing it for good releases it server-side.
                    logger.warning("could not release the object-writes lock", exc_info=True)
                    connection.invalidate()
        finally:
            connection.close()
        return
    path = _sqlite_lock_path(engine)
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock
