"""On-demand generation for narrow filters: can a 3-year window of either gender inside
0–80 get a photoreal face within the budget, and how long does it take?

Run by hand from the repository root, after measuring yields into a database::

    FACECAT_DATABASE_URL=sqlite:////tmp/od/y.db .venv/bin/facecat db upgrade
    FACECAT_DATABASE_URL=sqlite:////tmp/od/y.db .venv/bin/facecat ingest measure-yields \\
        --strategies sample,steer --samples 160 --per-cell 16
    .venv/bin/python tests/perf/bench_ondemand_windows.py --yields-db /tmp/od/y.db

Each trial is the real engine (``OnDemand.supply``: measured-yield plan, single flight,
framing and robust gates, admission through the ingest pipeline) on a fresh SQLite
catalog that holds no face, so every request needs generation. Misses count as
infinitely slow, so a median or p95 that lands on a miss is reported as null.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from app import create_app  # noqa: E402
from ingest.ondemand.models import load_model_set  # noqa: E402
from ingest.ondemand.ports import Target  # noqa: E402
from ingest.ondemand.yields import choose  # noqa: E402
from tests.perf_tools import perf_tool  # noqa: E402

logger = logging.getLogger("bench_ondemand_windows")
# Window starts spread over 0..78: children, teens, adults, seniors.
STARTS = (1, 6, 10, 14, 17, 24, 33, 45, 55, 62, 68, 74, 78)
WIDTH = 3


@click.command()
@click.option("--yields-db", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--models-dir", default=str(REPO_ROOT / "instance" / "models"), show_default=True)
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("/tmp/facecat-windows"))
@click.option("--budget", type=float, default=4.0, show_default=True)
@click.option("--trials", type=int, default=1, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(
    yields_db: Path | None,
    models_dir: str,
    workdir: Path,
    budget: float,
    trials: int,
    threads: int,
    out: Path | None,
) -> None:
    """Time to a face for 3-year windows of each gender (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    bench = perf_tool("bench_ondemand")
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    config = bench.app_config(models_dir, threads, budget)
    catalogs = bench.Catalogs(workdir, yields_db, config)
    models = load_model_set({**create_app(catalogs._config(catalogs.template)).config})
    rows: dict[str, Any] = {}
    all_times: list[float] = []
    for gender in ("female", "male"):
        for start in STARTS:
            target = Target(gender, start, min(start + WIDTH - 1, 80))
            times: list[float] = []
            strategy = "404"
            for _ in range(trials):
                app = catalogs.fresh()
                engine = bench.engine_for(app, models, budget)
                plan = choose(engine.plans(target, budget), engine.settings.min_success)
                strategy = plan.strategy if plan else "404"
                began = time.perf_counter()
                try:
                    face = engine.supply(target)
                except Exception as exc:  # Unreachable and friends: a miss
                    logger.info("%s: %s", target.key, exc)
                    face = None
                times.append(time.perf_counter() - began if face else float("inf"))
            all_times.extend(times)
            rows[f"{gender} {target.minimum_age}-{target.maximum_age}"] = {
                "strategy": strategy,
                **bench._summary(times),
            }
            logger.info("%s %s", target.key, json.dumps(rows[list(rows)[-1]]))
    report = {"budget_s": budget, "windows": rows, "overall": bench._summary(all_times)}
    text = json.dumps(report, indent=1)
    click.echo(text)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
