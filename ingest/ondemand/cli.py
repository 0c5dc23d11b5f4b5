"""``facecat ingest measure-yields`` and ``facecat ingest backfill``.

``measure-yields`` seeds the ``cell_yield`` table from a measurement instead of
hard-coded numbers: it generates candidates with each strategy, applies the same checks an
on-demand run applies (age range, broken image, black border, the augmentation-robust verdict), and
adds tried / passed / seconds per (gender, decade band). The seconds recorded per cell
are what an on-demand run for that cell would spend: generation and the plain estimate
for every candidate, plus the robust re-estimate for the candidates its prefilter
would pass.

Both reach the app's catalog through ``ingest.services`` (registered by the catalog), so
this module imports nothing from ``catalog``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import click
import numpy as np
from flask import current_app
from flask.cli import with_appcontext

from analysis.vocabulary import GENDERS
from ingest.ondemand.yields import (
    DECADES,
    SAMPLE,
    STEER,
    STRATEGIES,
    Counts,
    YieldTable,
)
from ingest.services import get_services, require_current_schema

logger = logging.getLogger(__name__)

PREFILTER_SLACK = 8.0  # as ingest.robust_gates.TargetPrefilterGate

Cell = tuple[str, tuple[int, int]]


def _parse_cells(value: str | None) -> list[Cell]:
    if not value:
        return [(g, b) for g in GENDERS for b in DECADES]
    cells: list[Cell] = []
    for item in value.split(","):
        gender, _, band = item.strip().partition(":")
        low, _, high = band.partition("-")
        match = [b for b in DECADES if str(b[0]) == low and str(b[1]) == high]
        if gender not in GENDERS or not match:
            raise click.BadParameter(
                f"{item!r}: expected gender:low-high with a decade band such as female:60-69"
            )
        cells.append((gender, match[0]))
    return cells


def _check(
    images: np.ndarray, estimator: Any, threshold: float, generator: Any = None
) -> tuple[np.ndarray, Any, Any, float, float]:
    """(usable mask, plain verdict, robust verdict, plain seconds, robust seconds/face).

    A portrait generator's faces are framed first (``analysis_view``): the verdicts are
    on the face crops, and a candidate without one usable face is not usable.
    """
    from analysis.robust import robust_predict
    from ingest.gates import (
        AgeRangeGate,
        BlackBorderGate,
        BrokenImageGate,
        Candidates,
        analysis_images,
    )

    start = time.perf_counter()
    images, framing = analysis_images(generator, images)
    plain = estimator.predict(images)
    plain_seconds = time.perf_counter() - start
    batch = Candidates(images, np.asarray(plain.age, float), np.asarray(plain.p_female, float))
    pending = np.ones(len(images), dtype=bool)
    usable = ~(
        AgeRangeGate().reject(batch, pending)
        | BrokenImageGate().reject(batch, pending)
        | BlackBorderGate().reject(batch, pending)
    )
    if framing is not None:
        usable &= np.array([reason is None for reason in framing], dtype=bool)
    start = time.perf_counter()
    robust = robust_predict(estimator, images)
    robust_per_face = (time.perf_counter() - start) / max(len(images), 1)
    return usable, plain, robust, plain_seconds, robust_per_face


def _tally(
    cells: Sequence[Cell],
    usable: np.ndarray,
    plain: Any,
    robust: Any,
    threshold: float,
    base_seconds: float,
    robust_per_face: float,
    aimed: Cell | None = None,
) -> dict[Cell, Counts]:
    """Counts per cell for one batch (``aimed``: a targeted batch counts only there)."""
    from analysis.robust import cell_match

    plain_age = np.asarray(plain.age, dtype=float)
    plain_gender = np.where(np.asarray(plain.p_female) > 0.5, "female", "male")
    out: dict[Cell, Counts] = {}
    for gender, band in [aimed] if aimed else cells:
        passed = cell_match(robust, gender, band, threshold) & usable
        near = (
            (plain_gender == gender)
            & (plain_age >= band[0] - PREFILTER_SLACK)
            & (plain_age <= band[1] + PREFILTER_SLACK)
        )
        out[(gender, band)] = Counts(
            float(len(usable)),
            float(passed.sum()),
            base_seconds + robust_per_face * float(near.sum()),
        )
    return out


def measure(
    strategy: str,
    models: Any,
    *,
    cells: Sequence[Cell],
    samples: int,
    per_cell: int,
    batch: int,
    threshold: float,
    optimise_steps: int,
    progress: Callable[[int], None] = lambda n: None,
) -> dict[Cell, Counts]:
    """Tried / passed / seconds per cell for one strategy (nothing is stored)."""
    import torch

    from ingest.ondemand.strategies import (
        GuidedOptimiser,
        SteeredPhotoreal,
    )
    from ingest.pipeline import draw_seeds

    totals: dict[Cell, Counts] = {}

    def add(part: dict[Cell, Counts]) -> None:
        for key, c in part.items():
            t = totals.setdefault(key, Counts())
            t.tried, t.passed, t.seconds = (
                t.tried + c.tried,
                t.passed + c.passed,
                t.seconds + c.seconds,
            )

    if strategy == SAMPLE:
        done = 0
        while done < samples:
            n = min(batch, samples - done)
            start = time.perf_counter()
            latents = models.generator.sample_latents(draw_seeds(n))
            images = models.generator.generate(latents, batch_size=n).cpu().numpy()
            gen_seconds = time.perf_counter() - start
            usable, plain, robust, plain_s, robust_pf = _check(
                images, models.estimator, threshold, models.generator
            )
            add(_tally(cells, usable, plain, robust, threshold, gen_seconds + plain_s, robust_pf))
            done += n
            progress(n)
        return totals
    for gender, band in cells:
        done = 0
        while done < per_cell:
            n = min(batch, per_cell - done)
            adapter: Any
            if strategy == STEER:
                if getattr(models, "steering", None) is None:
                    raise click.ClickException(
                        "no style directions for the generator: run `facecat ingest "
                        "fit-directions` (or configure the photoreal generator)"
                    )
                adapter = SteeredPhotoreal.for_filter(
                    models.generator, models.steering, gender, band[0], band[1]
                )
            else:
                adapter = GuidedOptimiser(
                    models.generator,
                    models.estimator,
                    gender,
                    band[0],
                    band[1],
                    steps=optimise_steps,
                )
            start = time.perf_counter()
            latents = adapter.sample_latents(draw_seeds(n))
            with torch.inference_mode():
                images = adapter.generate(latents, batch_size=n).cpu().numpy()
            gen_seconds = time.perf_counter() - start
            usable, plain, robust, plain_s, robust_pf = _check(
                images, models.estimator, threshold, models.generator
            )
            add(
                _tally(
                    cells,
                    usable,
                    plain,
                    robust,
                    threshold,
                    gen_seconds + plain_s,
                    robust_pf,
                    aimed=(gender, band),
                )
            )
            done += n
            progress(n)
    return totals


@click.command("measure-yields")
@with_appcontext
@click.option(
    "--strategies",
    default="sample,steer",
    show_default=True,
    help="Comma-separated: sample, steer, optimise (guarded optimisation: very slow at 1024 "
    "px on a CPU).",
)
@click.option(
    "--samples",
    type=click.IntRange(1),
    default=2048,
    show_default=True,
    help="Candidates for rejection sampling (every one is a try at every cell).",
)
@click.option(
    "--per-cell",
    type=click.IntRange(1),
    default=32,
    show_default=True,
    help="Candidates per (gender, band) cell for the targeted strategies.",
)
@click.option(
    "--cells", default=None, help="Limit targeted strategies, e.g. female:60-69,male:60-69."
)
@click.option("--batch", type=click.IntRange(1, 4096), default=8, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option(
    "--reset",
    is_flag=True,
    help="First delete the measured strategies' rows (after their weights changed).",
)
def measure_yields_command(
    strategies: str,
    samples: int,
    per_cell: int,
    cells: str | None,
    batch: int,
    device: str | None,
    reset: bool,
) -> None:
    """Measure each strategy's yield per (gender, decade band) and add it to cell_yield.

    Rows are not tied to a weights file: after retraining a generator, measure its
    strategy again with ``--reset`` so old counts do not dilute the new ones.

    Examples: ``facecat ingest measure-yields --samples 4096``,
    ``facecat ingest measure-yields --strategies steer --per-cell 16 --reset``,
    ``facecat ingest measure-yields --strategies optimise --per-cell 8 --cells female:60-69``.
    """
    from tqdm import tqdm

    from ingest.ondemand.models import load_model_set

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if unknown:
        raise click.BadParameter(f"unknown strategies {unknown}", param_hint="--strategies")
    chosen = _parse_cells(cells)
    require_current_schema(app)
    config = dict(app.config)
    if device:
        config["DEVICE"] = device
    models = load_model_set(config)
    catalog = get_services(app).catalog()
    threshold = app.config["GENDER_THRESHOLD"]
    for strategy in names:
        if strategy == STEER and models.steering is None:
            click.echo("steer: no style directions fitted for this generator; skipped")
            continue
        total = samples if strategy == SAMPLE else per_cell * len(chosen)
        with tqdm(total=total, unit="face", desc=strategy, dynamic_ncols=True) as bar:
            counts = measure(
                strategy,
                models,
                cells=chosen,
                samples=samples,
                per_cell=per_cell,
                batch=batch,
                threshold=threshold,
                optimise_steps=app.config["ONDEMAND_OPTIMISE_STEPS"],
                progress=bar.update,
            )
        catalog.record_yields(strategy, counts, reset=reset)
    click.echo(format_table(catalog.load_yields()))


def format_table(table: YieldTable) -> str:
    """The yield table as Markdown (docs/operations.md, "On-demand generation")."""
    lines = [
        "| strategy | gender | ages | tried | passed | yield | s/candidate |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (strategy, gender, low), c in sorted(
        table.rows.items(), key=lambda kv: (STRATEGIES.index(kv[0][0]), kv[0][1], kv[0][2])
    ):
        high = next(b[1] for b in DECADES if b[0] == low)
        lines.append(
            f"| {strategy} | {gender} | {low}-{high} | {int(c.tried)} | {int(c.passed)} | "
            f"{c.passed / c.tried if c.tried else 0:.2%} | "
            f"{c.seconds / c.tried if c.tried else 0:.4f} |"
        )
    return "\n".join(lines)


@click.command("backfill")
@with_appcontext
@click.option(
    "--limit",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Requested filters to serve in this run.",
)
def backfill_command(limit: int) -> None:
    """Generate faces for the filters users asked for and did not get (404 or slow).

    Example: ``facecat ingest backfill --limit 5``. The worker does this before each run.
    """
    require_current_schema(current_app)
    admitted = get_services(current_app).ondemand().run_backfill(limit=limit)
    click.echo(f"backfill admitted {admitted} faces")
