"""Ingest in real separate processes: killed mid-batch, signalled, and two at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from catalog.fsck import fsck
from catalog.sql.admission import SqlIngestCatalog
from catalog.sql.cells import verify_cells
from catalog.sql.models import Face, FaceCell, IngestRun
from catalog.storage.local import LocalStorage

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _child(database_url: str, storage_dir: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ingest.child", "--database", database_url,
         "--storage", str(storage_dir), *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"child exited early: {process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("child never reached the marker")
        time.sleep(0.02)


def test_sigkill_mid_batch_leaves_orphans_only(  # type: ignore[no-untyped-def]
    app, runner, session_maker, database_url, tmp_path
) -> None:
    objects = tmp_path / "objects"  # the app's STORAGE_URL, so `catalog fsck` sees them
    marker = tmp_path / "uploading"
    # Batch 1 (8 faces, 16 objects) is committed; batch 2 hangs at its 4th upload.
    child = _child(database_url, objects, "--count", "24", "--batch", "8",
                   "--pause-after-puts", "20", "--marker", str(marker))  # fmt: skip
    _wait_for(marker, child)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)

    report = fsck(session_maker, LocalStorage(objects))
    assert report.rows == 8 and report.missing == []
    # The 20th upload is written, then hangs; uploads 17-19 were counted before it but
    # may still be writing when it signals, and the other threads may store more of
    # batch 2 before the kill lands.
    orphans = len(report.orphans)
    assert 1 <= orphans <= 16
    with session_maker() as session:
        run = session.scalars(select(IngestRun)).one()
        assert run.status == "running"  # nobody lived to record the end
        assert run.admitted == 8  # written with the rows of batch 1
        assert verify_cells(session) == []

    result = runner.invoke(args=["catalog", "fsck"])
    assert result.exit_code == 1 and f"{orphans} orphaned objects" in result.output
    assert "0 rows whose objects are missing" in result.output
    result = runner.invoke(args=["catalog", "fsck", "--delete-orphans"])
    assert result.exit_code == 0, result.output
    assert f"deleted {orphans} orphaned objects" in result.output
    result = runner.invoke(args=["catalog", "fsck"])
    assert result.exit_code == 0 and "catalog and storage agree" in result.output

    # The next run to start finds the dead one silent and marks it, once it has been
    # silent for longer than the setting.
    catalog = SqlIngestCatalog(session_maker, stale_run_seconds=900)
    other = catalog.start_run(trigger="cli", device="cpu", generator="fake", requested=1)
    with session_maker() as session:
        assert session.get(IngestRun, run.id).status == "running"  # silent < 900 s
    SqlIngestCatalog(session_maker, stale_run_seconds=0.001).start_run(
        trigger="cli", device="cpu", generator="fake", requested=1
    )
    with session_maker() as session:
        dead = session.get(IngestRun, run.id)
        assert dead.status == "died" and "stopped without recording its end" in dead.error
        assert dead.admitted == 8  # its counts are kept
        assert session.get(IngestRun, other).status == "died"  # silent for over 1 ms too


def test_two_processes_never_overfill_a_band(  # type: ignore[no-untyped-def]
    app, session_maker, database_url, tmp_path
) -> None:
    go = tmp_path / "go"
    common = ["--count", "40", "--batch", "4", "--composition", '{"female:20-39": 1}',
              "--target-size", "10", "--estimator-delay", "0.02", "--go", str(go)]  # fmt: skip
    children = [_child(database_url, tmp_path / "objects", *common) for _ in range(2)]
    time.sleep(0.5)
    go.write_text("go")
    results = []
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["status"] == "completed" for r in results)
    assert sum(r["admitted"] for r in results) == 10
    with session_maker() as session:
        assert session.scalar(select(func.count()).select_from(Face)) == 10
        assert session.scalar(select(func.sum(FaceCell.n))) == 10
        assert verify_cells(session) == []
        for run in session.scalars(select(IngestRun)):
            rows = session.scalar(
                select(func.count()).select_from(Face).where(Face.ingest_run_id == run.id)
            )
            assert run.admitted == rows  # counted once, by the run that inserted it
            assert run.generated == 40 == run.admitted + sum(run.rejected.values())
    assert fsck(session_maker, LocalStorage(tmp_path / "objects")).clean


def test_worker_sigterm_finishes_the_batch_and_exits(  # type: ignore[no-untyped-def]
    app, session_maker, database_url, tmp_path
) -> None:
    marker = tmp_path / "estimating"
    child = _child(database_url, tmp_path / "objects", "--worker", "--count", "400",
                   "--batch", "8", "--estimator-delay", "0.3", "--marker", str(marker))  # fmt: skip
    _wait_for(marker, child)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 0, err[-3000:]
    with session_maker() as session:
        run = session.scalars(select(IngestRun)).one()
        assert run.status == "interrupted" and run.trigger == "worker"
        assert 8 <= run.generated < 400 and run.generated % 8 == 0
        faces = session.scalar(select(func.count()).select_from(Face))
        assert faces == run.admitted == run.generated
    report = fsck(session_maker, LocalStorage(tmp_path / "objects"))
    assert report.clean and report.orphans == []


def test_worker_second_sigterm_abandons_the_batch(  # type: ignore[no-untyped-def]
    app, session_maker, database_url, tmp_path
) -> None:
    marker = tmp_path / "uploading"
    child = _child(database_url, tmp_path / "objects", "--worker", "--count", "400",
                   "--batch", "8", "--pause-after-puts", "3", "--marker", str(marker))  # fmt: skip
    _wait_for(marker, child)
    child.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert child.poll() is None  # still finishing: the upload hangs
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=30)
    assert child.returncode == 130
    report = fsck(session_maker, LocalStorage(tmp_path / "objects"))
    assert report.rows == 0 and report.missing == [] and 3 <= len(report.orphans) <= 16
