"""``run_ingest`` end to end with fake models on the real databases and storage backends."""

from __future__ import annotations

import io
import re
import threading

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from catalog.fsck import fsck
from catalog.sql.cells import verify_cells
from catalog.sql.models import Face, FaceCell, IngestRun
from ingest.pipeline import draw_seeds
from ingest.pipeline.reports import ALREADY_INGESTED, DATABASE_ERROR, STORAGE_ERROR
from ingest.pipeline.stages import retrying
from ingest.settings import IngestSettings
from tests.ingest.fakes import FakeGenerator, FaultyStorage, Verdict

FILENAME = re.compile(r"(female|male)_(\d{1,3})_[0-9a-f]{40}\.(jpg|webp)")


def _faces(session_maker) -> list[Face]:  # type: ignore[no-untyped-def]
    with session_maker() as session:
        return list(session.scalars(select(Face).order_by(Face.id)))


def _assert_nothing_dangles(session_maker, storage) -> None:  # type: ignore[no-untyped-def]
    """Every row's objects exist (orphans are allowed; fsck sweeps them)."""
    report = fsck(session_maker, storage)
    assert report.missing == []


def test_ingest_stores_objects_then_rows(ingest, session_maker, storage) -> None:  # type: ignore[no-untyped-def]
    verdicts = {0: Verdict(30, 0.95), 1: Verdict(70, 0.02), 2: Verdict(30, 0.6)}
    generator = FakeGenerator(lambda seed: verdicts[seed % 3])
    seeds = [3 * k + r for k in range(4) for r in range(3)]
    report = ingest(
        12, generator=generator, storage=storage, seeds=seeds, settings={"batch_size": 5}
    )

    assert report.status == "completed" and report.error is None
    assert (report.generated, report.admitted) == (12, 8)
    assert report.rejected == {"gender_uncertain": 4}
    faces = _faces(session_maker)
    assert len(faces) == 8
    latents = generator.sample_latents([f.seed for f in faces]).numpy()
    for face, latent in zip(faces, latents, strict=True):
        match = FILENAME.fullmatch(face.filename)
        assert match and match.group(1) == face.gender and int(match.group(2)) == face.age
        assert face.image_key == f"faces/{face.filename}"
        assert face.thumb_key == f"thumbs/{face.filename}"
        original = Image.open(io.BytesIO(storage.get(face.image_key)))
        thumb = Image.open(io.BytesIO(storage.get(face.thumb_key)))
        assert original.size == (256, 256) and thumb.size == (128, 128)
        assert (face.width, face.height, face.thumb_size, face.native_size) == (256, 256, 128, 64)
        assert face.seed % 3 in (0, 1)
        assert (face.gender, face.age) == (("female", 30) if face.seed % 3 == 0 else ("male", 70))
        assert face.generator == "fake" and face.generator_checksum == "f" * 64
        assert face.estimator == "fakeest" and face.phash is not None
        np.testing.assert_array_equal(face.latent_vector, latent)
        assert face.ingest_run_id == report.run_id
    with session_maker() as session:
        run = session.get(IngestRun, report.run_id)
        assert run.status == "completed" and run.trigger == "test" and run.device == "cpu"
        assert (run.requested, run.generated, run.admitted) == (12, 12, 8)
        assert run.rejected == {"gender_uncertain": 4}
        assert run.finished_at is not None and run.faces_per_second > 0
        assert verify_cells(session) == []
        assert session.scalar(select(func.sum(FaceCell.n))) == 8
    _assert_nothing_dangles(session_maker, storage)
    assert fsck(session_maker, storage).orphans == []
    assert set(report.timings) >= {"generation", "estimation", "gates", "encode", "upload"}


def test_webp_setting(ingest, session_maker) -> None:  # type: ignore[no-untyped-def]
    report = ingest(3, settings={"image_format": "webp", "thumb_size": 350})
    assert report.admitted == 3
    for face in _faces(session_maker):
        assert face.filename.endswith(".webp") and face.image_format == "webp"
        assert face.content_type == "image/webp"


def test_rerun_with_same_seeds_is_idempotent(ingest, session_maker) -> None:  # type: ignore[no-untyped-def]
    first = ingest(6, seeds=list(range(6)))
    second = ingest(6, seeds=list(range(6)))
    assert first.admitted == 6
    assert second.admitted == 0 and second.rejected == {ALREADY_INGESTED: 6}
    assert len(_faces(session_maker)) == 6


def test_near_duplicates_of_the_catalog_are_rejected(ingest, session_maker) -> None:  # type: ignore[no-untyped-def]
    twin = FakeGenerator(lambda seed: Verdict(texture=7))
    first = ingest(1, generator=twin)
    second = ingest(4, generator=twin)
    assert first.admitted == 1
    assert second.admitted == 0 and second.rejected == {"near_duplicate": 4}


def test_broken_and_out_of_range_faces_are_counted(ingest) -> None:  # type: ignore[no-untyped-def]
    verdicts = [Verdict(brightness=0.1), Verdict(age=150), Verdict()]
    report = ingest(6, generator=FakeGenerator(lambda seed: verdicts[seed % 3]), seeds=range(6))
    assert report.admitted == 2
    assert report.rejected == {"broken_image": 2, "age_out_of_range": 2}


def test_curation_stops_at_band_target(ingest, session_maker) -> None:  # type: ignore[no-untyped-def]
    settings = {"composition": {"female:20-39": 1.0}, "target_size": 3}
    report = ingest(8, settings=settings)
    assert report.admitted == 3 and report.rejected == {"band_full": 5}
    again = ingest(4, settings=settings)
    assert again.admitted == 0 and again.rejected == {"band_full": 4}
    assert len(_faces(session_maker)) == 3


def test_max_admitted_prefers_the_emptiest_band(ingest, session_maker) -> None:  # type: ignore[no-untyped-def]
    settings = {"composition": {"female:20-39": 0.5, "male:60+": 0.5}, "target_size": 20}
    verdicts = [Verdict(30, 0.95), Verdict(30, 0.95), Verdict(70, 0.02)]
    generator = FakeGenerator(lambda seed: verdicts[seed % 3])
    ingest(4, generator=FakeGenerator(), settings=settings)  # female:20-39 now 4/10
    report = ingest(
        3, generator=generator, seeds=[100, 101, 102], settings=settings, max_admitted=1
    )
    assert report.admitted == 1 and report.rejected == {"limit_reached": 2}
    newest = _faces(session_maker)[-1]
    assert (newest.gender, newest.age) == ("male", 70)


def test_stop_event_finishes_the_batch_in_hand(ingest, session_maker) -> None:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    report = ingest(80, stop=stop, progress=lambda outcome: stop.set())
    assert report.status == "interrupted"
    assert 8 <= report.generated < 80 and report.generated % 8 == 0
    assert report.admitted == report.generated == len(_faces(session_maker))


def test_progress_reports_every_batch(ingest) -> None:  # type: ignore[no-untyped-def]
    seen = []
    report = ingest(20, progress=seen.append, settings={"batch_size": 8})
    assert [o.generated for o in seen] == [8, 8, 4]
    assert sum(o.admitted for o in seen) == report.admitted == 20


def test_draw_seeds_are_distinct_63_bit() -> None:
    seeds = draw_seeds(1000)
    assert len(set(seeds)) == 1000
    assert all(0 <= s < 2**63 for s in seeds)
    assert max(seeds) > 2**60  # drawn from the whole range, not a small counter


# --- failures -----------------------------------------------------------------------------


def test_transient_storage_errors_are_retried_with_backoff(ingest, storage, session_maker) -> None:  # type: ignore[no-untyped-def]
    faulty = FaultyStorage(storage, fail_first=2)
    delays: list[float] = []
    report = ingest(
        4,
        storage=faulty,
        sleep=delays.append,
        settings={"upload_retries": 3, "upload_backoff": 0.2, "upload_threads": 1},
    )
    assert report.status == "completed" and report.admitted == 4
    assert all(n == 3 for n in faulty.attempts.values())  # two failures, then success
    assert len(delays) == 2 * 8  # two retries for each of 8 objects
    first, second = delays[0::2], delays[1::2]
    assert all(0.1 <= d <= 0.2 for d in first)  # backoff with equal jitter
    assert all(0.2 <= d <= 0.4 for d in second)  # doubled
    _assert_nothing_dangles(session_maker, storage)


def test_retrying_gives_up_after_the_last_retry() -> None:
    from catalog.storage import StorageError

    calls: list[int] = []
    delays: list[float] = []

    def fails() -> None:
        calls.append(1)
        raise StorageError("down")

    with pytest.raises(StorageError):
        retrying(fails, retries=3, backoff=1.0, what="put", sleep=delays.append)
    assert len(calls) == 4 and len(delays) == 3
    assert all(0.5 * 2**i <= d <= 2**i for i, d in enumerate(delays))


def test_storage_down_mid_batch_leaves_no_dangling_row(ingest, storage, session_maker) -> None:  # type: ignore[no-untyped-def]
    # The first batch of 8 (16 objects) is stored; the outage starts 5 objects into the
    # second batch, and deletes fail too, so its uploads stay behind as orphans.
    faulty = FaultyStorage(storage, fail_after_puts=21, deletes_fail=True)
    report = ingest(24, storage=faulty, sleep=lambda s: None, settings={"upload_retries": 2})
    assert report.status == "failed" and "storage" in report.error
    assert report.admitted == 8
    assert report.rejected[STORAGE_ERROR] == 8
    assert report.generated == report.admitted + sum(report.rejected.values())
    assert len(_faces(session_maker)) == 8
    with session_maker() as session:
        run = session.get(IngestRun, report.run_id)
        assert run.status == "failed" and run.admitted == 8 and run.error
    found = fsck(session_maker, storage)
    assert found.missing == [] and len(found.orphans) == 5
    swept = fsck(session_maker, storage, delete_orphans=True)
    assert swept.deleted == 5
    after = fsck(session_maker, storage)
    assert after.clean and after.orphans == [] and after.objects == 16


def test_storage_down_deletes_its_own_uploads_when_it_can(ingest, storage, session_maker) -> None:  # type: ignore[no-untyped-def]
    faulty = FaultyStorage(storage, fail_after_puts=5)
    report = ingest(8, storage=faulty, sleep=lambda s: None, settings={"upload_retries": 1})
    assert report.status == "failed" and report.admitted == 0
    assert fsck(session_maker, storage).objects == 0


def _fail_commits_with_faces(session_maker, after: bool = False):  # type: ignore[no-untyped-def]
    """Make every commit that carries faces fail (before, or after it reached the DB)."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    def mark(session, flush_context, instances) -> None:  # type: ignore[no-untyped-def]
        # The identity map is weak: remember at flush time that faces were written.
        if any(isinstance(o, Face) for o in session.new):
            session.info["faces"] = True

    def boom(session) -> None:  # type: ignore[no-untyped-def]
        if session.info.pop("faces", False):
            raise OperationalError("COMMIT", {}, Exception("injected: connection lost"))

    hook = "after_commit" if after else "before_commit"
    event.listen(session_maker, "before_flush", mark)
    event.listen(session_maker, hook, boom)

    def undo() -> None:
        event.remove(session_maker, "before_flush", mark)
        event.remove(session_maker, hook, boom)

    return undo


def test_database_error_at_commit_leaves_no_row_and_no_object(
    ingest, storage, session_maker
) -> None:  # type: ignore[no-untyped-def]
    undo = _fail_commits_with_faces(session_maker)
    try:
        report = ingest(8, storage=storage)
    finally:
        undo()
    assert report.status == "failed" and "database" in report.error
    assert report.rejected == {DATABASE_ERROR: 8} and report.admitted == 0
    assert _faces(session_maker) == []
    assert fsck(session_maker, storage).objects == 0  # uploads were cleaned up
    with session_maker() as session:
        assert session.get(IngestRun, report.run_id).status == "failed"


def test_commit_error_after_the_server_committed_counts_as_success(
    ingest, storage, session_maker
) -> None:  # type: ignore[no-untyped-def]
    """The commit reached the database but the client saw an error: the rows exist, so the
    batch is admitted and its objects are kept (deleting them would leave dangling rows)."""
    undo = _fail_commits_with_faces(session_maker, after=True)
    try:
        report = ingest(4, storage=storage)
    finally:
        undo()
    assert report.status == "completed" and report.admitted == 4
    assert len(_faces(session_maker)) == 4
    found = fsck(session_maker, storage)
    assert found.missing == [] and found.orphans == []
    with session_maker() as session:
        assert session.get(IngestRun, report.run_id).admitted == 4


def test_model_error_marks_the_run_failed(ingest, session_maker) -> None:  # type: ignore[no-untyped-def]
    class Broken(FakeGenerator):
        def generate(self, latents, batch_size=256):  # type: ignore[no-untyped-def]
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        ingest(4, generator=Broken())
    with session_maker() as session:
        run = session.scalars(select(IngestRun)).one()
        assert run.status == "failed" and "out of memory" in run.error


def test_settings_from_config(app) -> None:  # type: ignore[no-untyped-def]
    app.config.update(INGEST_BATCH_SIZE=17, IMAGE_FORMAT="webp", INGEST_UPLOAD_RETRIES=2)
    settings = IngestSettings.from_config(app.config, batch_size=5)
    assert settings.batch_size == 5 and settings.image_format == "webp"
    assert settings.upload_retries == 2 and settings.thumb_size == app.config["THUMB_SIZE"]


def test_robust_gate_is_not_spent_on_faces_of_full_bands(ingest) -> None:  # type: ignore[no-untyped-def]
    settings = {"composition": {"female:20-39": 1.0}, "target_size": 2}
    assert ingest(2, settings=settings).admitted == 2
    full = ingest(8, settings={**settings, "robust": True})
    assert full.rejected == {"band_full": 8} and full.robust_checked == 0
    room = ingest(8, settings={**settings, "target_size": 100, "robust": True})
    assert room.robust_checked == 8
