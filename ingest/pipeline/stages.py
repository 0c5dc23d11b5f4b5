"""The three stages of an ingest run (*prepare*, *select*, *store*), held as one run's
state (models, storage, catalog, gates, band targets, timings), and *store*'s retries.

They are apart from ``run_ingest`` (``ingest.pipeline``, whose docstring has the order
and its reasons) because that decides *when* a stage runs (batching, overlap, stopping,
the run's record) and these *what* a stage does to one batch.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from ingest.bands import cell_key
from ingest.curation import BAND_FULL, Curator, target_counts
from ingest.gates import NEAR_DUPLICATE, Candidates, Gate, HashIndex, analysis_images, apply_gates
from ingest.imaging import encode_face, hamming
from ingest.pipeline.reports import (
    ALREADY_INGESTED,
    DATABASE_ERROR,
    STORAGE_ERROR,
    BatchFailed,
    BatchOutcome,
    IngestReport,
)
from ingest.pipeline.selection import _NoRoom, _Pick, _Prepared, _SeenSeeds, default_gates
from ingest.ports import (
    Admission,
    CatalogError,
    FaceRecord,
    IngestCatalog,
    InvalidObjectKey,
    ObjectStore,
    ObjectStoreError,
    RunCounts,
)
from ingest.robust_gates import RobustVerdictGate
from ingest.settings import IngestSettings

if TYPE_CHECKING:  # torch-backed protocols; the web app imports this module without torch
    from analysis.types import AgeGenderEstimator
    from ingest.generators import Generator

logger = logging.getLogger(__name__)


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


class _Run:
    """The state of one ``run_ingest`` call; ``ingest.pipeline``'s docstring has the stages."""

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
