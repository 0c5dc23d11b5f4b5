"""On-demand generation with the real models: time to a face, single flight, the sheet.

Run by hand (pytest does not collect ``bench_*`` files), from the repository root, after
``facecat ingest measure-yields`` has filled a yield table in ``--yields-db``::

    .venv/bin/python tests/perf/bench_ondemand.py --yields-db /tmp/od/facecat.db

What it measures, in one run, on the models' device (CPU by default, 2 torch threads):

1. time to a face for unmet but reachable filters in a catalog that has none: the
   engine (measured-yield plan, prefiltered robust gate, admission through the ingest
   pipeline) against plain rejection sampling without the strategy (every candidate
   robust-checked until one passes), each trial on a fresh SQLite catalog;
2. 50 concurrent requests for one unmet filter through the Flask test client (threads
   in one process): generation runs started, valid answers, slowest answer;
3. the yield table and the cells that answer 404 at once under the default budget;
4. ``run_ingest`` throughput without and with the robust gate (same seeds);
5. a contact sheet of faces served on demand per reachable cell, under docs/ondemand/.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))  # run from a checkout without installing

from analysis.robust import cell_match, robust_predict  # noqa: E402
from analysis.vocabulary import GENDERS  # noqa: E402
from app import create_app  # noqa: E402
from catalog.services import (  # noqa: E402
    find_service,
    install_service,
)
from catalog.sql import flight  # noqa: E402
from catalog.sql.db import get_engine, session_factory, upgrade  # noqa: E402
from catalog.sql.models import CellYield, Face  # noqa: E402
from catalog.sql.ondemand import SqlOndemandCatalog  # noqa: E402
from catalog.sql.yields import load_yields  # noqa: E402
from catalog.storage import Storage  # noqa: E402
from ingest.ondemand.cli import format_table  # noqa: E402
from ingest.ondemand.engine import OnDemand  # noqa: E402
from ingest.ondemand.models import ModelSet, load_model_set  # noqa: E402
from ingest.ondemand.ports import (  # noqa: E402
    FaceSupplier,
    Target,
)
from ingest.ondemand.settings import OndemandSettings  # noqa: E402
from ingest.ondemand.yields import DECADES, choose  # noqa: E402
from ingest.pipeline import draw_seeds  # noqa: E402

logger = logging.getLogger("bench_ondemand")

# Unmet filters: adults the photoreal generator makes by sampling, and children and
# women over 60, which it makes only rarely and steering aims at.
FILTERS = (
    Target("male", 40, 49),
    Target("female", 30, 39),
    Target("female", 40, 49),
    Target("female", 60, 69),
    Target("male", 0, 9),
)


def _percentile(values: list[float], q: float) -> float:
    """Interpolated percentile; inf or nan where it reaches into misses (inf)."""
    with np.errstate(invalid="ignore"):  # inf - inf while interpolating between misses
        return float(np.percentile(values, q)) if values else float("nan")


class Catalogs:
    """Fresh SQLite catalogs copied from one migrated template holding the yields."""

    def __init__(self, root: Path, yields_db: Path | None, config: dict[str, Any]) -> None:
        self.root, self.config, self.n = root, config, 0
        template = root / "template.db"
        app = create_app(self._config(template))
        upgrade(app)
        if yields_db is not None:
            source = create_app(self._config(yields_db))
            with session_factory(source)() as src, session_factory(app)() as dst:
                for row in src.query(CellYield).all():
                    src.expunge(row)
                    dst.merge(row)
                dst.commit()
            get_engine(source).dispose()
        # Closing the last connection checkpoints SQLite's WAL into the file we copy.
        get_engine(app).dispose()
        self.template = template

    def _config(self, path: Path) -> dict[str, Any]:
        return {
            **self.config,
            "DATABASE_URL": f"sqlite:///{path}",
            "STORAGE_URL": (self.root / f"objects-{path.stem}").as_uri(),
        }

    def fresh(self) -> Any:
        """A new app on a copy of the template (no faces, the measured yields)."""
        self.n += 1
        path = self.root / f"catalog-{self.n}.db"
        shutil.copyfile(self.template, path)
        return create_app(self._config(path))


def engine_for(app: Any, models: ModelSet, budget: float) -> OnDemand:
    settings = OndemandSettings.from_config({**app.config, "ONDEMAND_BUDGET_SECONDS": budget})
    engine = OnDemand(
        settings=settings,
        catalog=SqlOndemandCatalog(session_factory(app)),
        storage=find_service(Storage, app),
        models=lambda: models,
    )
    engine.models()  # loaded up front: plans then see which strategies really exist
    install_service(app, FaceSupplier, engine)
    return engine


def plain_rejection(models: ModelSet, filters: Target, budget: float, threshold: float) -> float:
    """Seconds to the first robustly passing face, robust-checking every candidate.

    Batches of 8, so it overruns its budget by about as little as the engine does.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < budget:
        latents = models.generator.sample_latents(draw_seeds(8))
        images = models.generator.generate(latents, batch_size=8).cpu().numpy()
        robust = robust_predict(models.estimator, images)
        if cell_match(
            robust, filters.gender, (filters.minimum_age, filters.maximum_age), threshold
        ).any():
            return time.perf_counter() - start
    return float("inf")


def time_to_face(catalogs: Catalogs, models: ModelSet, trials: int, budget: float) -> dict:
    results: dict[str, Any] = {}
    for filters in FILTERS:
        key = filters.key
        engine_times: list[float] = []
        plain_times: list[float] = []
        strategy = None
        for _ in range(trials):
            app = catalogs.fresh()
            engine = engine_for(app, models, budget)
            strategy = (
                choose(engine.plans(filters, budget), engine.settings.min_success)
                or type("none", (), {"strategy": "404"})
            ).strategy
            start = time.perf_counter()
            try:
                face = engine.supply(filters)
            except Exception as exc:  # Unreachable: recorded as a miss
                logger.info("%s: %s", key, exc)
                face = None
            engine_times.append(time.perf_counter() - start if face else float("inf"))
            plain_times.append(
                plain_rejection(models, filters, budget, app.config["GENDER_THRESHOLD"])
            )
        results[key] = {
            "strategy": strategy,
            "engine": _summary(engine_times),
            "plain_rejection": _summary(plain_times),
        }
        logger.info("%s: %s", key, json.dumps(results[key]))
    return results


def _finite_or_none(seconds: float) -> float | None:
    """Seconds rounded for the report, or None (JSON null) where misses decide the figure."""
    return round(seconds, 2) if np.isfinite(seconds) else None


def _summary(times: list[float]) -> dict[str, Any]:
    """Misses are infinitely slow, so a method cannot look fast by failing: a median or p95
    that lands on a miss is reported as null (no face in that share of the trials)."""
    hits = [t for t in times if np.isfinite(t)]
    return {
        "trials": len(times),
        "hits": len(hits),
        "median_s": _finite_or_none(statistics.median(times)),
        "p95_s": _finite_or_none(_percentile(times, 95)),
        "median_hit_s": round(statistics.median(hits), 2) if hits else None,
    }


def concurrent(
    catalogs: Catalogs, models: ModelSet, n: int, budget: float, concurrent_filter: Target
) -> dict:
    app = catalogs.fresh()
    engine_for(app, models, budget)
    filters = concurrent_filter
    url = (
        f"/face/json?gender={filters.gender}&minimum_age={filters.minimum_age}"
        f"&maximum_age={filters.maximum_age}"
    )
    barrier = threading.Barrier(n)
    answers: list[tuple[int, dict, float]] = [None] * n  # type: ignore[list-item]

    def request(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        start = time.perf_counter()
        response = client.get(url, environ_base={"REMOTE_ADDR": f"10.0.{i // 250}.{i % 250}"})
        answers[i] = (response.status_code, response.get_json(), time.perf_counter() - start)

    threads = [threading.Thread(target=request, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    valid = [
        a
        for a in answers
        if a[0] == 200
        and a[1]["gender"] == filters.gender
        and filters.minimum_age <= a[1]["age"] <= filters.maximum_age
    ]
    key = filters.key
    return {
        "filter": key,
        "requests": n,
        "generation_runs": flight.job_runs(session_factory(app), key),
        "valid_answers": len(valid),
        "statuses": sorted({a[0] for a in answers}),
        "distinct_faces": len({a[1]["id"] for a in valid}),
        "slowest_s": round(max(a[2] for a in answers), 2),
        "median_s": round(statistics.median(a[2] for a in answers), 2),
    }


def yield_report(catalogs: Catalogs, models: ModelSet, budget: float) -> tuple[str, list, list]:
    app = catalogs.fresh()
    engine = engine_for(app, models, budget)
    with session_factory(app)() as session:
        table = load_yields(session)
    reachable, refused = [], []
    for gender in GENDERS:
        for band in DECADES:
            filters = Target(gender, band[0], band[1])
            plan = choose(engine.plans(filters, budget), engine.settings.min_success)
            (reachable if plan else refused).append((filters, plan))
    return format_table(table), reachable, refused


def contact_sheet(
    catalogs: Catalogs, models: ModelSet, cells: list, budget: float, per_cell: int, out: Path
) -> list[dict]:
    rows: list[tuple[str, list[np.ndarray]]] = []
    served: list[dict] = []
    for filters, _plan in cells:
        app = catalogs.fresh()
        engine = engine_for(app, models, budget)
        images: list[np.ndarray] = []
        start = time.perf_counter()
        face = engine.supply(filters)
        seconds = time.perf_counter() - start
        if face is not None:
            storage = find_service(Storage, app)
            with session_factory(app)() as session:
                stored = session.query(Face).order_by(Face.id).limit(per_cell).all()
            for f in [face, *[s for s in stored if s.id != face.id]][:per_cell]:
                data = storage.get(f.image_key)
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        label = f"{filters.gender} {filters.minimum_age}-{filters.maximum_age}"
        served.append({"cell": label, "faces": len(images), "seconds": round(seconds, 2)})
        rows.append((label, images))
    tile, label_w = 128, 150
    sheet = Image.new("RGB", (label_w + per_cell * tile, max(1, len(rows)) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        draw.text((6, r * tile + tile // 2 - 6), label, fill="black")
        for c, image in enumerate(images):
            sheet.paste(Image.fromarray(image).resize((tile, tile)), (label_w + c * tile, r * tile))
        if not images:
            draw.text((label_w + 6, r * tile + tile // 2 - 6), "no face in budget", fill="red")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return served


def ingest_cost(catalogs: Catalogs, models: ModelSet, count: int) -> dict:
    """``run_ingest`` throughput without and with the robust gate, on the same seeds."""
    from ingest.pipeline import run_ingest
    from ingest.settings import IngestSettings

    seeds = draw_seeds(count)
    out: dict[str, Any] = {}
    for robust in (False, True):
        app = catalogs.fresh()
        settings = IngestSettings.from_config(app.config, robust=robust)
        settings = dataclasses.replace(settings, robust=robust)
        report = run_ingest(
            count,
            generator=models.generator,
            estimator=models.estimator,
            storage=find_service(Storage, app),
            catalog=SqlOndemandCatalog(session_factory(app)),
            settings=settings,
            trigger="bench",
            seeds=seeds,
        )
        out["robust" if robust else "plain"] = {
            "faces_per_s": round(report.faces_per_second, 2),
            "admitted": report.admitted,
            "rejected": dict(report.rejected),
            "timings": report.timings,
        }
    return out


def optimise_sheet(
    catalogs: Catalogs, models: ModelSet, cells: list[Target], seconds: float, out: Path
) -> list[dict]:
    """Guarded optimisation as the worker's backfill runs it, one batch per cell; the sheet
    shows every face it admitted (passed the robust gate)."""
    from ingest.ondemand.yields import OPTIMISE, Plan

    rows: list[tuple[str, list[np.ndarray]]] = []
    served: list[dict] = []
    for filters in cells:
        app = catalogs.fresh()
        engine = engine_for(app, models, seconds)
        plan = Plan(OPTIMISE, filters.gender, 0.05, 1.7, engine.settings.optimise_batch, seconds)
        start = time.perf_counter()
        _face, report = engine.run(plan, filters, engine.clock() + seconds, want=8)
        images: list[np.ndarray] = []
        with session_factory(app)() as session:
            for f in session.query(Face).order_by(Face.id).all():
                data = find_service(Storage, app).get(f.image_key)
                images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        label = f"{filters.gender} {filters.minimum_age}-{filters.maximum_age}"
        served.append(
            {
                "cell": label,
                "generated": report.generated if report else 0,
                "admitted": len(images),
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
        rows.append((label, images))
    _draw(rows, max([len(r[1]) for r in rows] + [1]), out)
    return served


def _draw(rows: list[tuple[str, list[np.ndarray]]], per_row: int, out: Path) -> None:
    tile, label_w = 128, 150
    sheet = Image.new("RGB", (label_w + per_row * tile, max(1, len(rows)) * tile), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, images) in enumerate(rows):
        draw.text((6, r * tile + tile // 2 - 6), label, fill="black")
        for c, image in enumerate(images[:per_row]):
            sheet.paste(Image.fromarray(image).resize((tile, tile)), (label_w + c * tile, r * tile))
        if not images:
            draw.text((label_w + 6, r * tile + tile // 2 - 6), "no face passed", fill="red")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def app_config(models_dir: Any, threads: int, budget: float) -> dict[str, Any]:
    """The settings every on-demand benchmark app runs with: CPU, ``threads`` torch
    threads, the given models and budget."""
    return {
        "TESTING": True,
        "MODELS_DIR": models_dir,
        "DEVICE": "cpu",
        "TORCH_THREADS": threads,
        "ONDEMAND_BUDGET_SECONDS": budget,
    }


@click.command()
@click.option("--yields-db", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--models-dir", default=str(REPO_ROOT / "instance" / "models"), show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("/tmp/bench_ondemand"))
@click.option("--trials", type=click.IntRange(1), default=7, show_default=True)
@click.option("--budget", type=float, default=4.0, show_default=True)
@click.option("--concurrency", type=click.IntRange(1), default=50, show_default=True)
@click.option("--per-cell", type=click.IntRange(1), default=4, show_default=True)
@click.option("--threads", type=click.IntRange(0), default=2, show_default=True)
@click.option(
    "--sheet",
    type=click.Path(path_type=Path),
    default=REPO_ROOT / "docs" / "ondemand" / "contact_sheet.png",
)
@click.option("--json-out", type=click.Path(path_type=Path), default=None)
@click.option("--ingest-count", type=click.IntRange(0), default=256, show_default=True)
@click.option(
    "--optimise-cells",
    default="",
    help="Also run guarded optimisation (backfill-style) for cells like male:60-69.",
)
@click.option("--optimise-seconds", type=float, default=600.0, show_default=True)
@click.option("--skip", multiple=True, type=click.Choice(["time", "concurrent", "sheet", "ingest"]))
def main(
    yields_db: Path | None,
    models_dir: str,
    workdir: Path,
    trials: int,
    budget: float,
    concurrency: int,
    per_cell: int,
    threads: int,
    sheet: Path,
    json_out: Path | None,
    ingest_count: int,
    optimise_cells: str,
    optimise_seconds: float,
    skip: tuple[str, ...],
) -> None:
    """Measure on-demand generation end to end (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    catalogs = Catalogs(workdir, yields_db, app_config(models_dir, threads, budget))
    models = load_model_set({**create_app(catalogs._config(catalogs.template)).config})
    report: dict[str, Any] = {"budget_s": budget}
    table, reachable, refused = yield_report(catalogs, models, budget)
    report["refused_at_once"] = [f"{f.gender} {f.minimum_age}-{f.maximum_age}" for f, _ in refused]
    report["reachable"] = {
        f"{f.gender} {f.minimum_age}-{f.maximum_age}": p.as_dict() for f, p in reachable
    }
    click.echo(table)
    if "time" not in skip:
        report["time_to_face"] = time_to_face(catalogs, models, trials, budget)
    if "concurrent" not in skip:
        report["concurrent"] = concurrent(catalogs, models, concurrency, budget, FILTERS[0])
    if "ingest" not in skip and ingest_count:
        report["ingest_cost"] = ingest_cost(catalogs, models, ingest_count)
        logger.info("ingest cost: %s", json.dumps(report["ingest_cost"]))
    if "sheet" not in skip:
        report["sheet"] = contact_sheet(catalogs, models, reachable, budget, per_cell, sheet)
    if optimise_cells:
        cells = []
        for item in optimise_cells.split(","):
            gender, _, ages = item.partition(":")
            low, _, high = ages.partition("-")
            cells.append(Target(gender, int(low), int(high)))
        report["optimise"] = optimise_sheet(
            catalogs, models, cells, optimise_seconds, sheet.with_name("contact_sheet_optimise.png")
        )
    text = json.dumps(report, indent=2)
    click.echo(text)
    if json_out:
        json_out.write_text(text)


if __name__ == "__main__":
    main()
