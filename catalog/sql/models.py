"""SQLAlchemy models: faces, the per-cell counters that make random picks cheap, runs.

Random selection (``catalog/selection.py``) never scans faces: ``FaceCell`` keeps the
number of faces per (gender, age-in-years) cell, and each face holds a dense ``slot``
0..n-1 inside its cell, so a uniform pick is "choose a cell by weight, choose a slot,
seek one row by the unique index" at any catalog size. ``selection.add_face`` and
``selection.remove_face`` are the only writers of ``slot`` and ``FaceCell``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from catalog.sql.db import Base


def utcnow() -> datetime:
    """Timezone-aware now; every timestamp facecat stores is UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware UTC, also from SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a UTC-aware one")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Face(Base):
    """One generated face: what the JSON shows, where the bytes are, how it was made."""

    __tablename__ = "face"
    __table_args__ = (
        CheckConstraint("gender IN ('female', 'male')", name="gender"),
        CheckConstraint("age >= 0 AND age <= 100", name="age_range"),
        CheckConstraint("p_female >= 0 AND p_female <= 1", name="p_female_range"),
        UniqueConstraint("gender", "age", "slot", name="uq_face_cell_slot"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    filename: Mapped[str] = mapped_column(String(80), unique=True)
    gender: Mapped[str] = mapped_column(String(6))
    age: Mapped[int] = mapped_column(SmallInteger)
    age_estimate: Mapped[float] = mapped_column(Float)
    p_female: Mapped[float] = mapped_column(Float)
    slot: Mapped[int] = mapped_column(Integer)

    image_key: Mapped[str] = mapped_column(String(255), unique=True)
    thumb_key: Mapped[str] = mapped_column(String(255), unique=True)
    image_format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    thumb_size: Mapped[int] = mapped_column(Integer)
    native_size: Mapped[int] = mapped_column(Integer)
    # Truncation ψ of the photoreal generator's style sampling; None for legacy generators.
    truncation: Mapped[float | None] = mapped_column(Float, nullable=True)

    generator: Mapped[str] = mapped_column(String(64))
    generator_checksum: Mapped[str] = mapped_column(String(64))
    estimator: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # float32 little-endian bytes: portable across SQLite and PostgreSQL, 400 B at nz=100.
    latent: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # 64-bit perceptual hash (signed, as BIGINT wants) for the near-duplicate gate.
    phash: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    date_added: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_served: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    times_served: Mapped[int] = mapped_column(Integer, default=0)
    ingest_run_id: Mapped[int | None] = mapped_column(
        ForeignKey("ingest_run.id", ondelete="SET NULL"), nullable=True, index=True
    )

    @property
    def latent_vector(self) -> np.ndarray | None:
        """The latent as a float32 array (None for faces without one)."""
        return None if self.latent is None else np.frombuffer(self.latent, dtype="<f4")

    @property
    def content_type(self) -> str:
        """MIME type of both stored images."""
        return f"image/{self.image_format}"

    def __repr__(self) -> str:
        return f"<Face {self.id} {self.gender} {self.age} {self.filename}>"


class FaceCell(Base):
    """Number of faces per (gender, age): the weights of a uniform random pick."""

    __tablename__ = "face_cell"
    __table_args__ = (CheckConstraint("n >= 0", name="n_nonnegative"),)

    gender: Mapped[str] = mapped_column(String(6), primary_key=True)
    age: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


class IngestRun(Base):
    """One ingest job (CLI, worker or on-demand), with its counts and speed."""

    __tablename__ = "ingest_run"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))  # cli | worker | ondemand
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Written with the run's counts after every batch: a 'running' run whose heartbeat
    # stopped belongs to a process that died (catalog.sql.admission marks it 'died').
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    device: Mapped[str] = mapped_column(String(32))
    generator: Mapped[str] = mapped_column(String(64))
    requested: Mapped[int] = mapped_column(Integer, default=0)
    generated: Mapped[int] = mapped_column(Integer, default=0)
    admitted: Mapped[int] = mapped_column(Integer, default=0)
    rejected: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    faces_per_second: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class APIKey(Base):
    """An API key: only its SHA-256 is kept; ``key_id`` is the public part used to find it.

    The full key is ``fc_<key_id>_<secret>`` (see ``catalog/keys.py``); the row never holds
    the secret, so a database leak does not leak usable keys.
    """

    __tablename__ = "api_key"
    __table_args__ = (
        CheckConstraint("user_class IN ('basic', 'professional', 'enterprise')", name="user_class"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(254), index=True)
    name: Mapped[str] = mapped_column(String(100))
    user_class: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    @property
    def active(self) -> bool:
        """A key works until it is revoked."""
        return self.revoked_at is None

    def __repr__(self) -> str:
        return f"<APIKey {self.key_id} {self.owner} {self.user_class}>"


class CellYield(Base):
    """How often a generation strategy robustly reaches one (gender, age band) cell.

    ``tried`` counts candidates that could have landed in the cell (every candidate of an
    untargeted strategy such as plain sampling; only candidates aimed at the cell for a
    targeted one), ``passed`` those whose augmentation-robust verdict did, and
    ``seconds`` the generation + estimation + gate time spent on those ``tried``. On-demand
    generation picks its strategy and answers hopeless filters at once from these rows
    (``ingest.ondemand.yields``); ingest, on-demand and backfill runs and ``facecat ingest
    measure-yields`` keep them up to date.
    """

    __tablename__ = "cell_yield"
    __table_args__ = (
        CheckConstraint("gender IN ('female', 'male')", name="gender"),
        CheckConstraint("age_low >= 0 AND age_low <= age_high AND age_high <= 100", name="band"),
        CheckConstraint("passed >= 0 AND passed <= tried", name="counts"),
    )

    strategy: Mapped[str] = mapped_column(String(16), primary_key=True)
    gender: Mapped[str] = mapped_column(String(6), primary_key=True)
    age_low: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    age_high: Mapped[int] = mapped_column(SmallInteger)
    tried: Mapped[int] = mapped_column(BigInteger, default=0)
    passed: Mapped[int] = mapped_column(BigInteger, default=0)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class OndemandJob(Base):
    """The claim on one generation run per normalised filter: single flight across processes.

    The primary key is the normalised filter (``female:40-49``), so only one request in any
    process can hold a ``running`` row for it; the others see the row and wait for its
    outcome. A row whose ``expires_at`` passed (its process died) may be taken over.
    ``runs`` counts the generation runs ever started for the filter.
    """

    __tablename__ = "ondemand_job"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # running | done | failed
    owner: Mapped[str] = mapped_column(String(64))
    strategy: Mapped[str | None] = mapped_column(String(16), nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    face_id: Mapped[int | None] = mapped_column(
        ForeignKey("face.id", ondelete="SET NULL"), nullable=True
    )
    runs: Mapped[int] = mapped_column(Integer, default=0)


class BackfillRequest(Base):
    """A filter users asked for that the catalog could not serve at once (404 or slow).

    The worker fills these cells in the background, most requested first, so the catalog
    grows where users asked. ``status`` is ``pending``, ``done`` (faces admitted) or
    ``unreachable`` (no strategy can reach the filter even with the backfill budget).
    """

    __tablename__ = "backfill_request"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    gender: Mapped[str | None] = mapped_column(String(6), nullable=True)
    minimum_age: Mapped[int] = mapped_column(SmallInteger)
    maximum_age: Mapped[int] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(String(16))  # not_found | slow
    requests: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    admitted: Mapped[int] = mapped_column(Integer, default=0)
    first_requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    fulfilled_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class FacegenJob(Base):
    """One look-alike job (``POST /api/v6/image_editing/face_gen``) and its outcome.

    The id is a random token: it is the capability to fetch the job's outputs, so it must
    not be guessable. ``request`` holds the validated parameters (never the photo, which
    lives in storage under ``facegen/uploads/`` only until the job ends); ``outputs`` the
    storage keys of the results, removed by the worker at ``expires_at``.
    """

    __tablename__ = "facegen_job"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # queued|processing|success|error|expired
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    track_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    webhook: Mapped[str | None] = mapped_column(Text, nullable=True)
    outputs: Mapped[list[str]] = mapped_column(JSON, default=list)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    webhook_error: Mapped[str | None] = mapped_column(Text, nullable=True)
