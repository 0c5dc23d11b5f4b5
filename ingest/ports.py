"""What the ingest pipeline needs from outside ``ingest``: object storage and catalog rows.

``ingest`` may not import ``catalog`` (DESIGN.md: catalog → ingest → analysis), yet the
pipeline writes objects and rows that ``catalog`` owns. So ingest states its needs here as
Protocols ("ports") and plain values, and ``catalog`` implements them
(``catalog.storage`` backends satisfy ``ObjectStore`` as they are; ``catalog.sql.admission``
is the SQL side of ``IngestCatalog``). Tests may pass any object with these methods.

Nothing here imports numpy, torch or SQLAlchemy: ``catalog.storage`` imports this module
in every web process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

# --- objects --------------------------------------------------------------------------

# Where a face's two objects live: ``faces/<filename>`` and ``thumbs/<filename>``. Ingest
# names the objects it writes; catalog serves them by these keys and audits them (fsck).
FACES_PREFIX = "faces/"
THUMBS_PREFIX = "thumbs/"


class ObjectStoreError(RuntimeError):
    """The store failed or refused an operation; the pipeline retries puts that raise it.

    ``catalog.storage.StorageError`` derives from it, so every backend failure is one.
    """


class InvalidObjectKey(ObjectStoreError, ValueError):
    """The store refuses the key itself: a bug, not a transient fault, never retried."""


class ObjectStore(Protocol):
    """The two storage operations ingest uses (``catalog.storage.Storage`` has them).

    Both may raise ``ObjectStoreError``; neither may leave a partial object behind.
    """

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing any previous object atomically."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...


# --- rows -----------------------------------------------------------------------------


class CatalogError(RuntimeError):
    """The catalog's database failed where ingest recovers from it.

    Raised only by ``Admission`` (the batch is given up), ``IngestCatalog.existing`` (its
    uploads are left to fsck) and ``IngestCatalog.finish_run`` (only logged). Elsewhere
    the backend's own exception propagates and ends the run as failed, like any
    unexpected error (the web layer answers a lost database with 503 from its type).
    """


@dataclass(frozen=True, slots=True)
class FaceRecord:
    """Everything ingest knows about one admitted face: the catalog row, minus its slot.

    The catalog adds what only it decides (the slot in the face's cell, ``date_added``).
    """

    filename: str
    gender: str
    age: int
    age_estimate: float
    p_female: float
    image_key: str
    thumb_key: str
    image_format: str
    width: int
    height: int
    thumb_size: int
    native_size: int
    generator: str
    generator_checksum: str
    estimator: str
    seed: int
    latent: bytes  # float32 little-endian
    phash: int  # 64-bit perceptual hash, signed
    ingest_run_id: int | None
    truncation: float | None = None  # the photoreal generator's ψ; None for legacy ones


@dataclass(frozen=True, slots=True)
class RunCounts:
    """A run's running totals: generated, admitted and rejected by reason."""

    generated: int
    admitted: int
    rejected: Mapping[str, int]


class CatalogView(Protocol):
    """Reads inside one transaction: what gates and curation judge a batch against."""

    def band_counts(self) -> dict[str, int]:
        """Faces per ``gender:band`` cell (``ingest.bands.cell_key``), empty cells left out."""
        ...

    def seen_seeds(self, generator_checksum: str, seeds: Sequence[int]) -> set[int]:
        """Which of ``seeds`` already made a stored face with these generator weights."""
        ...

    def hashes_after(self, last_id: int) -> Sequence[tuple[int, int]]:
        """``(face id, perceptual hash)`` of faces with an id above ``last_id``, by id."""
        ...


class Admission(CatalogView, Protocol):
    """The insert transaction of one batch, holding the catalog's insert lock.

    The lock is taken before the first read, and held until the transaction ends, so the
    reads are exact: no other process admits a face meanwhile, and a re-check of band
    room, seeds and hashes here cannot be overtaken. Every failure raises ``CatalogError``
    and rolls everything back; leaving the context without ``commit`` rolls back too.
    """

    def add(self, record: FaceRecord) -> None:
        """Insert the face's row (objects must already be stored)."""
        ...

    def update_run(self, run_id: int, counts: RunCounts) -> None:
        """Set the run's totals, in this transaction."""
        ...

    def commit(self) -> None:
        """Commit. A commit that reports an error but did reach the database (the reply
        was lost) counts as done when every added row is found afterwards."""
        ...


class IngestCatalog(Protocol):
    """The catalog as the ingest pipeline uses it (``catalog.sql.admission.SqlIngestCatalog``)."""

    def read(self) -> AbstractContextManager[CatalogView]:
        """A read-only view, one transaction, for the cheap checks before uploading."""
        ...

    def admission(self) -> AbstractContextManager[Admission]:
        """The insert transaction of one batch (see ``Admission``)."""
        ...

    def object_writes(self) -> AbstractContextManager[None]:
        """Hold the object-writes lock (shared) from the first upload to the commit.

        The orphan sweep takes it exclusively, so it never deletes the objects of a
        batch whose rows are about to be committed.
        """
        ...

    def start_run(self, *, trigger: str, device: str, generator: str, requested: int) -> int:
        """Record a run as started and return its id."""
        ...

    def update_run(self, run_id: int, counts: RunCounts) -> None:
        """Set the run's totals in a transaction of their own (a batch admitted nothing)."""
        ...

    def finish_run(
        self,
        run_id: int,
        counts: RunCounts,
        *,
        status: str,
        faces_per_second: float,
        error: str | None,
    ) -> None:
        """Record the run's end; raises ``CatalogError`` if the database fails."""
        ...

    def existing(self, filenames: Iterable[str]) -> set[str]:
        """Which of ``filenames`` have a row; raises ``CatalogError`` if unreadable."""
        ...
