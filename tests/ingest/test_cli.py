"""``facecat ingest run``, ``facecat catalog fsck`` and the worker's scheduling."""

from __future__ import annotations

import threading
import time

import pytest
from apscheduler.triggers.interval import IntervalTrigger

import ingest.cli
from catalog.services import find_service, install_service
from catalog.storage import Storage
from ingest.pipeline.reports import IngestReport
from ingest.scheduling import JOB_ID, IngestWorker, build_scheduler
from ingest.settings import IngestSettings
from tests.ingest.fakes import FakeEstimator, FakeGenerator, Verdict


@pytest.fixture
def fake_models(app, monkeypatch):  # type: ignore[no-untyped-def]
    """Make the CLI load the fake models instead of the real weights.

    The robust-verdict gate is off: it re-estimates flipped and shifted copies, and the
    fake estimator reads its verdict from one pixel, which those move.
    """
    app.config["INGEST_ROBUST_GATE"] = False
    loaded: list[tuple[str | None, int | None]] = []

    def load(app, device=None, batch_size=None):  # type: ignore[no-untyped-def]
        loaded.append((device, batch_size))
        verdicts = [Verdict(30, 0.95), Verdict(30, 0.55)]
        return FakeGenerator(lambda seed: verdicts[seed % 2]), FakeEstimator()

    monkeypatch.setattr(ingest.cli, "load_models", load)
    return loaded


def test_ingest_run_prints_a_summary(runner, fake_models) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(args=["ingest", "run", "--count", "40", "--batch", "8"])
    assert result.exit_code == 0, result.output
    assert fake_models == [(None, 8)]
    summary = result.stdout.splitlines()  # the progress bar goes to stderr
    first = next(line for line in summary if line.startswith("run "))
    assert "completed: generated 40" in first and "faces/s" in first
    admitted = int(first.split("admitted ")[1].split(",")[0])
    rejected = int(first.split("rejected ")[1].split(" ")[0])
    assert admitted + rejected == 40 and rejected > 0
    assert any(line.split() == ["gender_uncertain", str(rejected)] for line in summary)


def test_ingest_run_if_empty_seeds_once(app, runner, fake_models) -> None:  # type: ignore[no-untyped-def]
    app.config["INGEST_SEED_COUNT"] = 5
    result = runner.invoke(args=["ingest", "run", "--if-empty", "--batch", "4"])
    assert result.exit_code == 0, result.output
    assert "admitted 5," in result.output
    again = runner.invoke(args=["ingest", "run", "--if-empty"])
    assert again.exit_code == 0 and "already holds 5 faces" in again.output
    assert len(fake_models) == 1  # the second call did not even load the models


def test_seeding_progress_counts_the_admissions_it_waits_for(app, runner, fake_models) -> None:  # type: ignore[no-untyped-def]
    """The bar of `make run`'s seeding ends at INGEST_SEED_COUNT admitted, not at the
    larger number of faces it may generate to get there."""
    from ingest.cli import SEED_GENERATION_FACTOR

    app.config["INGEST_SEED_COUNT"] = 5
    result = runner.invoke(args=["ingest", "run", "--if-empty", "--batch", "4"])
    assert result.exit_code == 0, result.output
    assert "seeding: 100%" in result.output and "5/5 [" in result.output
    assert f"/{5 * SEED_GENERATION_FACTOR} [" not in result.output


def test_ingest_run_fails_loudly_when_storage_is_down(
    app, runner, fake_models, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from tests.ingest.fakes import FaultyStorage, always

    # Every face passes: with fake_models' alternating verdicts, the 8 random seeds can
    # all be rejected (1 run in 256): then nothing reaches storage and the run exits 0.
    monkeypatch.setattr(
        ingest.cli,
        "load_models",
        lambda *_a, **_k: (FakeGenerator(always(Verdict(30, 0.95))), FakeEstimator()),
    )
    app.config.update(INGEST_UPLOAD_RETRIES=0)
    install_service(app, Storage, FaultyStorage(find_service(Storage, app), fail_after_puts=0))
    result = runner.invoke(args=["ingest", "run", "--count", "8"])
    assert result.exit_code == 1
    assert "storage_error" in result.output and "Error: storage failed" in result.output


def test_missing_weights_name_the_fetch_command(app, runner, tmp_path) -> None:  # type: ignore[no-untyped-def]
    app.config["MODELS_DIR"] = str(tmp_path / "no-models")
    result = runner.invoke(args=["ingest", "run", "--count", "1", "--device", "cpu"])
    assert result.exit_code == 1 and "facecat models fetch" in result.output


# --- fsck ---------------------------------------------------------------------------------


def test_fsck_finds_orphans_and_missing_objects(app, runner, make_face) -> None:  # type: ignore[no-untyped-def]
    storage = find_service(Storage, app)
    kept = make_face()
    broken = make_face()
    storage.delete(broken.thumb_key)
    storage.put("faces/male_40_" + "a" * 40 + ".jpg", b"x", "image/jpeg")
    storage.put("other/readme.txt", b"not ours", "text/plain")

    result = runner.invoke(args=["catalog", "fsck"])
    assert result.exit_code == 1
    assert "1 orphaned objects" in result.output and "orphan  faces/male_40_" in result.output
    assert f"missing face {broken.id}: {broken.thumb_key}" in result.output
    assert "(run with --delete-orphans)" in result.output

    result = runner.invoke(args=["catalog", "fsck", "--delete-orphans"])
    assert "deleted 1 orphaned objects" in result.output
    assert result.exit_code == 1  # the missing thumbnail is still a problem
    assert storage.exists(kept.image_key) and storage.exists("other/readme.txt")
    assert not storage.exists("faces/male_40_" + "a" * 40 + ".jpg")


def test_fsck_clean_catalog(runner, make_face) -> None:  # type: ignore[no-untyped-def]
    make_face()
    result = runner.invoke(args=["catalog", "fsck"])
    assert result.exit_code == 0 and "1 rows, 2 objects" in result.output


# --- scheduling ---------------------------------------------------------------------------


def test_scheduler_job_never_overlaps_and_coalesces() -> None:
    scheduler = build_scheduler(lambda: None, 30)
    job = scheduler.get_job(JOB_ID)
    assert job.max_instances == 1 and job.coalesce is True
    assert isinstance(job.trigger, IntervalTrigger)
    assert job.trigger.interval.total_seconds() == 30
    assert job.misfire_grace_time == 30


def test_slow_runs_do_not_overlap() -> None:
    """With a 0.1 s interval and 0.3 s runs, runs are skipped, never run side by side."""
    active = 0
    peak = 0
    runs = 0
    lock = threading.Lock()

    def slow() -> None:
        nonlocal active, peak, runs
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.3)
        with lock:
            active -= 1
            runs += 1

    scheduler = build_scheduler(slow, 0.1)
    scheduler.start()
    time.sleep(1.0)
    scheduler.shutdown(wait=True)
    assert peak == 1 and 2 <= runs <= 4


def _report() -> IngestReport:
    return IngestReport(trigger="worker", device="cpu", requested=1, status="completed")


def test_worker_job_rests_when_full_and_survives_errors() -> None:
    calls: list[str] = []

    def run_once(stop: threading.Event) -> IngestReport:
        calls.append("run")
        if len(calls) == 2:
            raise RuntimeError("database unreachable")
        return _report()

    full = False
    worker = IngestWorker(run_once, interval_seconds=60, is_full=lambda: full)
    worker.job()
    worker.job()  # raises inside: logged, not propagated
    full = True
    worker.job()
    assert calls == ["run", "run"] and worker.runs == 1
    worker.stop.set()
    full = False
    worker.job()
    assert calls == ["run", "run"]


def test_worker_run_stops_when_asked() -> None:
    started = threading.Event()

    def run_once(stop: threading.Event) -> IngestReport:
        started.set()
        stop.wait(5)
        return _report()

    worker = IngestWorker(run_once, interval_seconds=3600)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    assert started.wait(10)
    worker.stop.set()
    thread.join(10)
    assert not thread.is_alive() and worker.runs == 1


def test_make_worker_uses_the_settings(app) -> None:  # type: ignore[no-untyped-def]
    settings = IngestSettings.from_config(app.config, batch_size=4, robust=False)
    worker = ingest.cli.make_worker(
        app,
        generator=FakeGenerator(),
        estimator=FakeEstimator(),
        count=8,
        interval_seconds=42,
        settings=settings,
    )
    assert worker.scheduler.get_job(JOB_ID).trigger.interval.total_seconds() == 42
    assert worker.is_full() is False
    report = worker.run_once(threading.Event())
    assert report.trigger == "worker" and report.generated == 8 and report.admitted == 8


def test_the_workers_housekeeping_keeps_the_avatar_cache_under_its_cap(app_factory) -> None:  # type: ignore[no-untyped-def]
    app = app_factory(AVATAR_STORE_BYTES=1024 * 1024)
    storage = find_service(Storage, app)
    for i in range(3):
        storage.put(f"avatars/{i}.jpg", bytes(600 * 1024), "image/jpeg")
    settings = IngestSettings.from_config(app.config, batch_size=4, robust=False)
    worker = ingest.cli.make_worker(
        app,
        generator=FakeGenerator(),
        estimator=FakeEstimator(),
        count=1,
        interval_seconds=60,
        settings=settings,
    )
    assert worker.housekeeping is not None
    worker.housekeeping()
    assert list(storage.keys("avatars/")) == ["avatars/2.jpg"]  # 600 KB <= 0.8 MiB


def test_failing_housekeeping_does_not_stop_ingest() -> None:
    calls: list[str] = []

    def housekeeping() -> None:
        calls.append("housekeeping")
        raise RuntimeError("storage unreachable")

    def run_once(stop: threading.Event) -> IngestReport:
        calls.append("run")
        return _report()

    worker = IngestWorker(run_once, interval_seconds=60, housekeeping=housekeeping)
    worker.job()
    assert calls == ["housekeeping", "run"] and worker.runs == 1


@pytest.mark.parametrize(
    "args",
    [
        ["ingest", "run", "--count", "4"],
        ["ingest", "worker"],
        ["ingest", "measure-yields", "--per-cell", "1"],
        ["ingest", "backfill"],
    ],
)
def test_ingest_commands_stop_at_once_on_an_unmigrated_database(
    app_factory, tmp_path, monkeypatch, args
) -> None:  # type: ignore[no-untyped-def]
    """Before any model is loaded: measure-yields used to generate for a minute and then
    fail on its first write, and the worker logged a missing-table traceback every run."""
    app = app_factory(DATABASE_URL=f"sqlite:///{tmp_path / 'unmigrated.db'}")

    def no_models(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("models loaded on an unmigrated database")

    monkeypatch.setattr(ingest.cli, "load_models", no_models)
    monkeypatch.setattr("ingest.ondemand.models.load_model_set", no_models)
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 1, result.output
    assert "is at an empty schema" in result.output
    assert "run `facecat db upgrade` first" in result.output
