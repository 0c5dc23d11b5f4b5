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
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.bands import cell_key
from ingest.curation import BAND_FULL, Curator, target_counts
from ingest.gates import (
    NEAR_DUPLICATE,
    Candidates,
    Gate,
    HashIndex,
    RobustVerdictGate,
    analysis_images,
    apply_gates,
    default_gates,
)
from ingest.imaging import EncodedFace, encode_face, face_filename, hamming
from ingest.ports import (
    FACES_PREFIX,
    THUMBS_PREFIX,
    Admission,
    CatalogError,
    FaceRecord,
    IngestCatalog,
    InvalidObjectKey,
    ObjectStore,
    ObjectStoreError,
    RunCounts,
)

if TYPE_CHECKING:  # torch-backed protocols; the web app imports this module without torch
    from analysis.types import AgeGenderEstimator
    from ingest.generators import Generator

logger = logging.getLogger(__name__)

ALREADY_INGESTED = "already_ingested"  # seed + generator checksum already in the catalog
STORAGE_ERROR = "storage_error"  # uploads failed after every retry: batch given up
DATABASE_ERROR = "database_error"  # the insert transaction failed: batch given up
ABANDONED = "abandoned"  # generated, then dropped because an earlier batch failed

SEED_BITS = 63  # fits a signed BIGINT; collisions need ~3·10^9 faces for even odds


class BatchFailed(RuntimeError):
    """A batch was given up; the run stops, leaving no row without its objects."""

    def __init__(self, reason: str, message: str, outcome: BatchOutcome) -> None:
        super().__init__(message)
        self.reason = reason
        self.outcome = outcome


@dataclass(frozen=True)
class IngestSettings:
    """Everything ``run_ingest`` reads from configuration, as one immutable value."""

    batch_size: int = 64
    image_size: int = 256
    thumb_size: int = 128
    image_format: str = "jpeg"
    quality: int = 90
    gender_threshold: float = 0.8
    duplicate_distance: int = 6
    composition: Mapping[str, float] | None = None
    target_size: int = 20000
    upload_retries: int = 4
    upload_backoff: float = 0.5
    upload_threads: int = 4
    # Store batch k while batch k+1 is generated; off only to measure stages separately.
    overlap: bool = True
    # The augmentation-robust verdict gate (``ingest.gates.RobustVerdictGate``): stored
    # labels are medians over augmented copies, as on-demand ones are (issue 5). On in
    # every configured run (``INGEST_ROBUST_GATE``, default true); off in the bare
    # dataclass so unit tests with pixel-reading fake estimators stay meaningful.
    robust: bool = False
    # Band targets apply; on-demand admission turns them off, because a face generated
    # for a user's filter is admitted whatever the band's fill.
    curate: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> IngestSettings:
        """Read the declared settings (``catalog.config``) from an app's config."""
        values: dict[str, Any] = {
            "batch_size": config["INGEST_BATCH_SIZE"],
            "image_size": config["IMAGE_SIZE"],
            "thumb_size": config["THUMB_SIZE"],
            "image_format": config["IMAGE_FORMAT"],
            "quality": config["JPEG_QUALITY"],
            "gender_threshold": config["GENDER_THRESHOLD"],
            "duplicate_distance": config["DUPLICATE_DISTANCE"],
            "composition": config.get("TARGET_COMPOSITION"),
            "target_size": config["INGEST_TARGET_SIZE"],
            "upload_retries": config["INGEST_UPLOAD_RETRIES"],
            "upload_backoff": config["INGEST_UPLOAD_BACKOFF_SECONDS"],
            "upload_threads": config["INGEST_UPLOAD_THREADS"],
            "robust": config["INGEST_ROBUST_GATE"],
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass
class BatchOutcome:
    """What became of one batch's faces."""

    generated: int = 0
    admitted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


@dataclass
class IngestReport:
    """The result of a run: counts by reason, speed, and where the time went.

    ``timings`` holds seconds per stage. ``generation``, ``estimation``, ``gates`` and
    ``insert`` are wall time; ``encode`` and ``upload`` are summed over the upload
    threads (they run in parallel), and ``store`` is the wall time of encode + upload.
    With ``overlap`` the store stage runs beside the next batch's generation, so the
    stages add up to more than ``seconds``.
    """

    trigger: str
    device: str
    requested: int
    run_id: int | None = None
    generated: int = 0
    admitted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    status: str = "running"
    error: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    # Robust-verdict passes per (gender, age) and faces checked, from any gate that
    # counts them (``RobustVerdictGate``): what the on-demand yield table learns from.
    robust_passes: Counter[tuple[str, int]] = field(default_factory=Counter)
    robust_checked: int = 0

    @property
    def faces_per_second(self) -> float:
        """Generated faces per wall-clock second (the speed of the whole pipeline)."""
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    def add(self, outcome: BatchOutcome) -> None:
        """Fold one batch's counts into the run's."""
        self.generated += outcome.generated
        self.admitted += outcome.admitted
        self.rejected.update(outcome.rejected)

    def summary(self) -> str:
        """Multi-line human summary for the CLI and the logs."""
        lines = [
            f"run {self.run_id} {self.status}: generated {self.generated}, "
            f"admitted {self.admitted}, rejected {sum(self.rejected.values())} "
            f"in {self.seconds:.1f} s ({self.faces_per_second:.1f} faces/s on {self.device})"
        ]
        for reason, n in self.rejected.most_common():
            lines.append(f"  {reason:18s} {n:6d}")
        if self.timings:
            lines.append(
                "  time: " + ", ".join(f"{stage} {sec:.2f}s" for stage, sec in self.timings.items())
            )
        if self.error:
            lines.append(f"  error: {self.error}")
        return "\n".join(lines)


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


def retrying(
    action: Callable[[], None],
    *,
    retries: int,
    backoff: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    give_up: threading.Event | None = None,
) -> None:
    """Run ``action``, retrying ``ObjectStoreError`` up to ``retries`` times.

    Delays double from ``backoff`` with "equal jitter" (half fixed, half random), so many
    workers retrying against a recovering MinIO do not arrive in lockstep. An invalid key
    is a bug, not a transient fault, and is not retried. ``give_up`` set by another
    thread ends the retries early (the batch is lost anyway).
    """
    for attempt in range(retries + 1):
        try:
            action()
            return
        except InvalidObjectKey:
            raise
        except ObjectStoreError as exc:
            if attempt == retries or (give_up is not None and give_up.is_set()):
                raise
            delay = backoff * 2**attempt
            delay = delay / 2 + random.uniform(0, delay / 2)
            logger.warning(
                "%s failed (%s); retry %d/%d in %.2f s", what, exc, attempt + 1, retries, delay
            )
            sleep(delay)


@dataclass
class _SeenSeeds:
    """The idempotency check as a gate: seeds these weights already made a face from."""

    seen: set[int]
    reason: str = ALREADY_INGESTED

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        return np.isin(batch.seeds, np.fromiter(self.seen, dtype=np.int64, count=len(self.seen)))


@dataclass
class _NoRoom:
    """Curation's band check on the plain verdict, ahead of the costly robust gate.

    The robust gate keeps a face only if its median age stays in the same decade, so the
    band can change only between 0-12 and 13-19 (or with a rare gender flip); final
    curation on the robust labels still decides. Counts are the catalog's before the batch.
    """

    curator: Curator
    reason: str = BAND_FULL

    def reject(self, batch: Candidates, pending: np.ndarray) -> np.ndarray:
        ages = np.clip(np.nan_to_num(np.round(batch.age)), 0, 100).astype(int)
        genders = batch.gender
        return np.array(
            [
                bool(pending[i]) and self.curator.room(cell_key(str(genders[i]), int(ages[i]))) == 0
                for i in range(len(batch))
            ],
            dtype=bool,
        )


@dataclass
class _Prepared:
    """A generated and estimated batch, before selection."""

    candidates: Candidates
    latents: np.ndarray  # (N, latent_dim) float32
    originals: np.ndarray  # (N, S, S, 3) uint8 at the generator's native size


@dataclass
class _Pick:
    """One face chosen for the catalog, everything its row needs but the slot."""

    index: int
    seed: int
    gender: str
    age: int
    age_estimate: float
    p_female: float
    phash: int
    cell: str
    latent: bytes
    image: np.ndarray
    encoded: EncodedFace | None = None

    @property
    def filename(self) -> str:
        assert self.encoded is not None
        return face_filename(self.gender, self.age, self.encoded)

    @property
    def keys(self) -> tuple[str, str]:
        return FACES_PREFIX + self.filename, THUMBS_PREFIX + self.filename


class _Run:
    """The state of one ``run_ingest`` call; see the module docstring for the stages."""

    def __init__(
        self,
        *,
        generator: Generator,
        estimator: AgeGenderEstimator,
        storage: ObjectStore,
        catalog: IngestCatalog,
        settings: IngestSettings,
        gates: Sequence[Gate] | None,
        index: HashIndex,
        report: IngestReport,
        sleep: Callable[[float], None],
    ) -> None:
        self.generator = generator
        self.estimator = estimator
        self.storage = storage
        self.catalog = catalog
        self.settings = settings
        self.index = index
        self.gates = (
            list(gates)
            if gates is not None
            else default_gates(
                gender_threshold=settings.gender_threshold,
                duplicate_distance=settings.duplicate_distance,
                index=index,
                estimator=estimator if settings.robust else None,
            )
        )
        self.targets = target_counts(settings.composition, settings.target_size)
        if not settings.curate:
            # Room without limit in every band: on-demand faces are admitted regardless.
            self.targets = dict.fromkeys(self.targets, 2**62)
        self.report = report
        self.sleep = sleep
        self.timings: Counter[str] = Counter()
        self._timing_lock = threading.Lock()

    def _time(self, stage: str, seconds: float) -> None:
        with self._timing_lock:
            self.timings[stage] += seconds

    # --- 1. prepare ---------------------------------------------------------------------

    def prepare(self, seeds: Sequence[int]) -> _Prepared:
        """Generate and estimate one batch (the models; the expensive part)."""
        start = time.perf_counter()
        latents = self.generator.sample_latents(seeds)
        images = self.generator.generate(latents, batch_size=max(len(seeds), 1))
        pixels = images.cpu().numpy()  # also waits for the device to finish
        generated = time.perf_counter()
        analysed, framing = analysis_images(self.generator, pixels)
        framed_at = time.perf_counter()
        estimates = self.estimator.predict(analysed)
        self._time("generation", generated - start)
        self._time("detection", framed_at - generated)
        self._time("estimation", time.perf_counter() - framed_at)
        candidates = Candidates(
            images=analysed,
            age=np.asarray(estimates.age, dtype=np.float64),
            p_female=np.asarray(estimates.p_female, dtype=np.float64),
            seeds=np.asarray(seeds, dtype=np.int64),
            framing=framing,
        )
        return _Prepared(candidates, latents.detach().cpu().numpy().astype("<f4"), pixels)

    # --- 2. select ----------------------------------------------------------------------

    def select(self, batch: _Prepared, limit: int | None) -> tuple[list[_Pick], BatchOutcome]:
        """Gates, idempotency and curation: which faces of the batch go to the catalog."""
        start = time.perf_counter()
        cand = batch.candidates
        outcome = BatchOutcome(generated=len(cand))
        with self.catalog.read() as view:
            self.index.refresh(view)
            curator = Curator(self.targets, view.band_counts())
            seen = view.seen_seeds(self.generator.checksum, cand.seeds.tolist())
        # Seeds first: a re-run of a seed is "already ingested", not a near-duplicate.
        gates: list[Gate] = [_SeenSeeds(seen), *self.gates]
        expensive = next(
            (k for k, gate in enumerate(gates) if isinstance(gate, RobustVerdictGate)), None
        )
        if expensive is not None:
            # Once the common bands are full (a worker's steady state) most faces are
            # band_full; the robust gate's nine estimates per face are not spent on them.
            gates.insert(expensive, _NoRoom(curator))
        reasons = apply_gates(gates, cand)
        passing: list[int] = []
        for i, reason in enumerate(reasons):
            if reason is None:
                passing.append(i)
            else:
                outcome.rejected[reason] += 1
        genders = cand.gender
        ages = np.round(cand.age).astype(int)
        cells = [cell_key(str(genders[i]), int(ages[i])) for i in passing]
        # Curation's order (emptiest band first), taken before admitting changes the
        # counts; the picks keep it so the insert re-check honours it too.
        order = curator.order(cells)
        decisions = curator.admit(cells, limit=limit)
        picks: list[_Pick] = []
        for j in order:
            if decisions[j] is not None:
                outcome.rejected[decisions[j]] += 1
                continue
            i = passing[j]
            picks.append(
                _Pick(
                    index=i,
                    seed=int(cand.seeds[i]),
                    gender=str(genders[i]),
                    age=int(ages[i]),
                    age_estimate=float(cand.age[i]),
                    p_female=float(cand.p_female[i]),
                    phash=int(cand.phash[i]),
                    cell=cells[j],
                    latent=batch.latents[i].tobytes(),
                    image=batch.originals[i],
                )
            )
        self._time("gates", time.perf_counter() - start)
        return picks, outcome

    # --- 3. store -----------------------------------------------------------------------

    def store(self, picks: list[_Pick], outcome: BatchOutcome, pool: ThreadPoolExecutor) -> None:
        """Encode and upload every pick, then insert the rows; raises BatchFailed."""
        if not picks:
            self._commit_counts(outcome)
            return
        uploaded: list[str] = []
        uploaded_lock = threading.Lock()
        give_up = threading.Event()
        settings = self.settings

        def encode_and_upload(pick: _Pick) -> None:
            began = time.perf_counter()
            pick.encoded = encode_face(
                pick.image,
                image_size=settings.image_size,
                thumb_size=settings.thumb_size,
                image_format=settings.image_format,
                quality=settings.quality,
            )
            encoded = time.perf_counter()
            self._time("encode", encoded - began)
            try:
                for key, data in zip(
                    pick.keys, (pick.encoded.original, pick.encoded.thumbnail), strict=True
                ):
                    if give_up.is_set():
                        raise ObjectStoreError("batch given up after another upload failed")
                    # Recorded before the attempt: a put that timed out may still land.
                    with uploaded_lock:
                        uploaded.append(key)
                    retrying(
                        lambda key=key, data=data: self.storage.put(
                            key, data, pick.encoded.content_type
                        ),
                        retries=settings.upload_retries,
                        backoff=settings.upload_backoff,
                        what=f"upload of {key}",
                        sleep=self.sleep,
                        give_up=give_up,
                    )
            except ObjectStoreError:
                give_up.set()
                raise
            finally:
                self._time("upload", time.perf_counter() - encoded)

        with self.catalog.object_writes():
            began = time.perf_counter()
            futures = [pool.submit(encode_and_upload, pick) for pick in picks]
            errors = [f.exception() for f in futures]
            self._time("store", time.perf_counter() - began)
            failure = next((e for e in errors if e is not None), None)
            if failure is not None:
                outcome.rejected[STORAGE_ERROR] += len(picks)
                self._discard(uploaded)
                if isinstance(failure, ObjectStoreError):
                    raise BatchFailed(
                        STORAGE_ERROR, f"storage failed after retries: {failure}", outcome
                    ) from failure
                raise failure
            began = time.perf_counter()
            try:
                inserted = self._insert(picks, outcome)
            except CatalogError as exc:
                self._time("insert", time.perf_counter() - began)
                outcome.rejected[DATABASE_ERROR] += len(picks)
                self._discard(uploaded)
                raise BatchFailed(DATABASE_ERROR, f"database failed: {exc}", outcome) from exc
            self._time("insert", time.perf_counter() - began)
        lost = {key for pick in picks if pick.filename not in inserted for key in pick.keys}
        if lost:
            self._discard(sorted(lost))

    def _insert(self, picks: list[_Pick], outcome: BatchOutcome) -> set[str]:
        """One transaction: lock, re-check, insert the rows, count, commit.

        Returns the filenames inserted. ``outcome`` is updated only on success.
        """
        run_id = self.report.run_id
        with self.catalog.admission() as admission:
            curator = Curator(self.targets, admission.band_counts())
            seen = admission.seen_seeds(self.generator.checksum, [p.seed for p in picks])
            fresh = self.index.refresh(admission)
            late: Counter[str] = Counter()
            inserted: set[str] = set()
            for pick in picks:
                if pick.seed in seen:
                    late[ALREADY_INGESTED] += 1
                    continue
                if len(fresh) and hamming(pick.phash, fresh).min() <= (
                    self.settings.duplicate_distance
                ):
                    late[NEAR_DUPLICATE] += 1
                    continue
                if curator.room(pick.cell) <= 0:
                    late[BAND_FULL] += 1  # another worker filled it meanwhile
                    continue
                curator.counts[pick.cell] = curator.counts.get(pick.cell, 0) + 1
                admission.add(self._record(pick, run_id))
                inserted.add(pick.filename)
            result = BatchOutcome(outcome.generated, len(inserted), outcome.rejected + late)
            self._write_counts(admission, result)
            admission.commit()
        outcome.admitted = result.admitted
        outcome.rejected = result.rejected
        return inserted

    def _record(self, pick: _Pick, run_id: int | None) -> FaceRecord:
        encoded = pick.encoded
        assert encoded is not None
        image_key, thumb_key = pick.keys
        return FaceRecord(
            filename=pick.filename,
            gender=pick.gender,
            age=pick.age,
            age_estimate=pick.age_estimate,
            p_female=pick.p_female,
            image_key=image_key,
            thumb_key=thumb_key,
            image_format=encoded.image_format,
            width=encoded.width,
            height=encoded.height,
            thumb_size=encoded.thumb_size,
            native_size=int(pick.image.shape[0]),
            generator=self.generator.name,
            generator_checksum=self.generator.checksum,
            estimator=self.estimator.name,
            seed=pick.seed,
            latent=pick.latent,
            phash=pick.phash,
            ingest_run_id=run_id,
            truncation=getattr(self.generator, "truncation", None),
        )

    def _totals(self, outcome: BatchOutcome) -> RunCounts:
        """The run's totals including ``outcome``."""
        return RunCounts(
            generated=self.report.generated + outcome.generated,
            admitted=self.report.admitted + outcome.admitted,
            rejected=dict(self.report.rejected + outcome.rejected),
        )

    def _write_counts(self, admission: Admission, outcome: BatchOutcome) -> None:
        """The run's totals including ``outcome``, in the admission's transaction."""
        if self.report.run_id is not None:
            admission.update_run(self.report.run_id, self._totals(outcome))

    def _commit_counts(self, outcome: BatchOutcome) -> None:
        """Record a batch that admitted nothing (its rejections still count)."""
        if self.report.run_id is not None:
            self.catalog.update_run(self.report.run_id, self._totals(outcome))

    def _discard(self, keys: Sequence[str]) -> None:
        """Delete uploaded objects that no row references; leave the rest to fsck.

        The check matters when a commit failed ambiguously (the connection dropped after
        the server committed): then rows exist, and their objects must stay. If even the
        check fails, nothing is deleted: an orphan is harmless, a dangling row is not.
        """
        if not keys:
            return
        filenames = {key.rpartition("/")[2] for key in keys}
        try:
            referenced = self.catalog.existing(filenames)
        except CatalogError:
            logger.warning(
                "cannot check %d uploaded objects against the catalog; leaving them for "
                "`facecat catalog fsck --delete-orphans`",
                len(keys),
                exc_info=True,
            )
            return
        for key in keys:
            if key.rpartition("/")[2] in referenced:
                continue
            try:
                self.storage.delete(key)
            except ObjectStoreError as exc:
                logger.warning("could not delete %s (%s); fsck will find it", key, exc)


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
    settings: IngestSettings | None = None,
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
    settings = settings or IngestSettings()
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
