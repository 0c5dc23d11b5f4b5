"""Ingest end to end against PostgreSQL and an S3 endpoint, next to the models alone.

Run by hand (pytest does not collect ``bench_*`` files), from the repository root::

    .venv/bin/python tests/perf/bench_ingest.py
    .venv/bin/python tests/perf/bench_ingest.py --device cuda --batch 512 --count 20000

What it measures, all at the same batch size and on the same device:

1. estimator only: ``estimator.predict`` on pre-generated faces (the ingest target's yardstick);
2. generator only, and generator + estimator (the models, no bookkeeping);
3. ``run_ingest`` end to end, into a fresh PostgreSQL database (created on the server at
   ``--postgres``, dropped afterwards) and a bucket on moto's S3 server over HTTP, run
   as a separate process (the same minio client code as MinIO): in the default
   configuration (robust-verdict gate on, store stage overlapping the next batch's
   generation), then without the robust-verdict gate, then that strictly in sequence,
   whose per-stage times show where the bookkeeping's time goes;
4. admission rate and rejection reasons per 1,000 generated faces.

Every face is generated from fresh random seeds, so later runs also meet the earlier
runs' faces in the duplicate gate, as a worker does. The robust gate's nine estimates
per face are billed to "gates".
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing

from analysis.device import configure_threads  # noqa: E402
from analysis.estimators import load_estimator  # noqa: E402
from ingest.gates import analysis_images  # noqa: E402
from ingest.generators import load_generator  # noqa: E402
from ingest.pipeline import draw_seeds, run_ingest  # noqa: E402
from ingest.pipeline.reports import IngestReport  # noqa: E402
from ingest.settings import IngestSettings  # noqa: E402

logger = logging.getLogger(__name__)

STAGES = ("generation", "estimation", "gates", "encode", "upload", "store", "insert")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _rate(step: Callable[[], None], faces_per_step: int, count: int) -> tuple[float, float]:
    """(faces per wall second, CPU ms per face) of ``step`` over ~``count`` faces.

    CPU time counts every thread of this process and nothing else, so it moves far less
    than wall time when other people's jobs share the cores.
    """
    step()
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    while done < count:
        step()
        done += faces_per_step
    return done / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / done


def _database(server_url: str) -> tuple[str, Callable[[], None]]:
    """A fresh, migrated PostgreSQL database and a function that drops it."""
    from sqlalchemy import create_engine, text

    from catalog.sql.db import engine_url

    name = f"facecat_bench_ingest_{os.getpid()}"
    admin = create_engine(engine_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = engine_url(server_url).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


def _row(label: str, rate: float, cpu: float, yardstick: tuple[float, float]) -> str:
    return (
        f"| {label} | {rate:,.1f} | {rate / yardstick[0]:.2f} | {cpu:.1f} "
        f"| {yardstick[1] / cpu:.2f} |"
    )


def _stage_table(report: IngestReport) -> list[str]:
    lines = ["| stage | seconds | ms/face | share of wall |", "| --- | ---: | ---: | ---: |"]
    for stage in STAGES:
        seconds = report.timings.get(stage, 0.0)
        lines.append(
            f"| {stage} | {seconds:.2f} | {1000 * seconds / max(report.generated, 1):.2f} "
            f"| {seconds / report.seconds:.0%} |"
        )
    lines.append(f"| **wall** | {report.seconds:.2f} | "
                 f"{1000 * report.seconds / max(report.generated, 1):.2f} | 100% |")  # fmt: skip
    return lines


@click.command()
@click.option("--models-dir", type=click.Path(path_type=Path), default=None)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=2, show_default=True, help="torch threads; 0 = default")
@click.option("--generator", "generator_name", default="mobilestylegan", show_default=True)
@click.option("--batch", default=8, show_default=True)
@click.option("--count", default=1000, show_default=True, help="faces per ingest run")
@click.option(
    "--postgres",
    default="postgresql://postgres@127.0.0.1:5432/test",
    show_default=True,
    help="server to create the throwaway benchmark database on",
)
def main(
    models_dir: Path | None,
    device: str,
    threads: int,
    generator_name: str,
    batch: int,
    count: int,
    postgres: str,
) -> None:
    """Print the throughput table, the stage breakdown and the rejection reasons."""
    logging.basicConfig(level=logging.WARNING)
    configure_threads(threads)
    if models_dir is None:
        env = os.environ.get("FACECAT_MODELS_DIR")
        models_dir = Path(env) if env else REPO_ROOT / "instance" / "models"
    generator = load_generator(generator_name, models_dir, device=device)
    estimator = load_estimator("faceapi", models_dir, device=generator.device, batch_size=batch)

    def analysed(images: Any) -> Any:
        """Portraits are framed first and the estimator sees face crops, as in ingest."""
        return analysis_images(generator, images)[0]

    # --- the models alone ------------------------------------------------------------
    pool = generator.generate(generator.sample_latents(draw_seeds(batch * 4)), batch).cpu()
    pool_np = analysed(pool.numpy())
    chunks = [pool_np[i : i + batch] for i in range(0, len(pool_np), batch)]
    turn = iter(range(10**9))

    def estimate() -> None:
        estimator.predict(chunks[next(turn) % len(chunks)])

    def generate() -> None:
        images = generator.generate(generator.sample_latents(draw_seeds(batch)), batch)
        images.cpu()

    def both() -> None:
        images = generator.generate(generator.sample_latents(draw_seeds(batch)), batch)
        estimator.predict(analysed(images.cpu().numpy()))

    estimator_only = _rate(estimate, batch, count)
    generator_only = _rate(generate, batch, count)
    models = _rate(both, batch, count)

    # --- ingest end to end: PostgreSQL + S3 over HTTP ---------------------------------
    from sqlalchemy.orm import sessionmaker

    from app import create_app
    from catalog.fsck import fsck
    from catalog.sql import db
    from catalog.sql.admission import SqlIngestCatalog
    from catalog.storage import storage_from_url

    port = _free_port()
    # moto's S3 server in its own process, as MinIO would be: in-process it would take
    # the GIL from the pipeline and bill its own request handling to "upload".
    s3 = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port)
    database_url, drop = _database(postgres)
    storage_url = f"s3://bench:bench@127.0.0.1:{port}/bench-{uuid.uuid4().hex[:8]}?region=us-east-1"
    try:
        app = create_app({"DATABASE_URL": database_url, "STORAGE_URL": storage_url})
        db.upgrade(app)
        session_maker: sessionmaker = db.session_factory(app)
        storage = storage_from_url(storage_url)
        # (overlap, robust gate): the default configuration first, then the same strictly
        # in sequence for the stage breakdown, then without the robust-verdict gate.
        runs = {
            "default": (True, True),
            "no robust gate": (True, False),
            "no robust gate, sequential": (False, False),
        }
        reports: dict[str, IngestReport] = {}
        cpu_ms: dict[str, float] = {}
        for name, (overlap, robust) in runs.items():
            settings = IngestSettings.from_config(
                app.config, batch_size=batch, overlap=overlap, robust=robust
            )
            cpu = time.process_time()
            reports[name] = run_ingest(
                count,
                generator=generator,
                estimator=estimator,
                storage=storage,
                catalog=SqlIngestCatalog(session_maker),
                settings=settings,
                trigger="bench",
            )
            cpu_ms[name] = 1000 * (time.process_time() - cpu) / reports[name].generated
        check = fsck(session_maker, storage)
    finally:
        s3.terminate()
        s3.wait(10)
        drop()

    click.echo(
        f"\ntorch {torch.__version__} on {generator.device}, {torch.get_num_threads()} threads, "
        f"batch {batch}, {count} faces per run, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} after the runs (shared cores skew every rate)\n"
    )
    click.echo("| pipeline | faces/s (wall) | / estimator only | CPU ms/face | / estimator only |")
    click.echo("| --- | ---: | ---: | ---: | ---: |")
    rows = [
        ("estimator only (face-api, pre-generated faces)", *estimator_only),
        (f"generator only ({generator.name})", *generator_only),
        ("generator + estimator", *models),
    ]
    labels = {
        "default": "ingest end to end (default: robust gate, store overlapped)",
        "no robust gate": "ingest end to end, no robust gate, store overlapped",
        "no robust gate, sequential": "ingest end to end, no robust gate, stages in sequence",
    }
    rows += [(labels[n], r.faces_per_second, cpu_ms[n]) for n, r in reports.items()]
    for label, rate, cpu in rows:
        click.echo(_row(label, rate, cpu, estimator_only))
    click.echo("\nend to end / (generator + estimator), wall: " + ", ".join(
        f"{r.faces_per_second / models[0]:.2f} ({name})" for name, r in reports.items()
    ) + "; CPU: " + ", ".join(
        f"{models[1] / cpu_ms[name]:.2f} ({name})" for name in reports
    ))  # fmt: skip
    for name, report in reports.items():
        click.echo(f"\nWhere the time goes, {name} run (encode, upload: summed over threads):\n")
        for line in _stage_table(report):
            click.echo(line)
    for name in ("default", "no robust gate"):
        report = reports[name]
        click.echo(f"\nPer 1,000 generated faces, {name} ({report.generated} generated):\n")
        click.echo("| outcome | per 1,000 |")
        click.echo("| --- | ---: |")
        click.echo(f"| admitted | {1000 * report.admitted / report.generated:.0f} |")
        for reason, n in report.rejected.most_common():
            click.echo(f"| {reason} | {1000 * n / report.generated:.0f} |")
    click.echo(
        f"\nfsck after the runs: {check.rows} rows, {check.objects} objects, "
        f"{len(check.orphans)} orphans, {len(check.missing)} rows missing objects"
    )


if __name__ == "__main__":
    main()
