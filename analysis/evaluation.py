"""Measure age/gender estimators on a labelled face folder (e.g. shared/data/utkface-dev).

The folder holds ``labels.csv`` (``file,age,gender`` with gender ``male``/``female``) and
the images under ``images/``. Faces are estimated whole (they are already aligned chips),
so the numbers measure the estimator, not a detector. Results are broken down by the age
bands the catalog serves, because a good overall MAE can hide a band that is useless.
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from analysis.types import AgeGenderEstimator
from analysis.vocabulary import BANDS, GENDERS, MAX_AGE

logger = logging.getLogger(__name__)

# (label, lowest age, highest age or None for open-ended): the catalog's bands, labelled
# with en dashes as the reports print them.
AGE_BANDS: tuple[tuple[str, int, int | None], ...] = tuple(
    (band.label.replace("-", "–"), band.low, band.high if band.high < MAX_AGE else None)
    for band in BANDS
)


@dataclass(frozen=True)
class LabelledFace:
    """One row of labels.csv."""

    file: str
    age: int
    female: bool


@dataclass(frozen=True)
class Metrics:
    """Scores on one group of faces; NaN where the group is empty.

    ``age_bias`` is the mean signed error (predicted - true): positive means the
    estimator makes people older than they are.
    """

    group: str
    n: int
    gender_accuracy: float
    age_mae: float
    age_bias: float


@dataclass(frozen=True)
class EstimatorResult:
    """One estimator's scores, overall and per age band, plus its raw predictions."""

    estimator: str
    checksum: str
    overall: Metrics
    bands: tuple[Metrics, ...]
    faces_per_second: float
    age: np.ndarray = field(repr=False, compare=False)
    p_female: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Evaluation:
    """Everything one ``evaluate`` run measured."""

    dataset: str
    faces: tuple[LabelledFace, ...] = field(repr=False)
    results: tuple[EstimatorResult, ...]


def read_labels(dataset_dir: str | Path) -> list[LabelledFace]:
    """Parse ``labels.csv``; raises ValueError naming the first bad row."""
    path = Path(dataset_dir) / "labels.csv"
    faces = []
    with path.open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            gender = row.get("gender", "").strip().lower()
            if gender not in GENDERS:
                raise ValueError(f"{path}:{line}: gender must be male or female, got {gender!r}")
            try:
                age = int(row["age"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(f"{path}:{line}: bad age {row.get('age')!r}") from None
            faces.append(LabelledFace(row["file"], age, gender == "female"))
    return faces


def _metrics(group: str, true_age, female, pred_age, p_female) -> Metrics:
    n = len(true_age)
    if n == 0:
        return Metrics(group, 0, math.nan, math.nan, math.nan)
    error = np.asarray(pred_age, np.float64) - np.asarray(true_age, np.float64)
    # 0.5 counts as male, as FaceAttributes.gender (and face-api.js) do.
    correct = (np.asarray(p_female) > 0.5) == np.asarray(female, bool)
    return Metrics(
        group, n, float(correct.mean()), float(np.abs(error).mean()), float(error.mean())
    )


def compute_metrics(
    true_age: np.ndarray, female: np.ndarray, pred_age: np.ndarray, p_female: np.ndarray
) -> tuple[Metrics, tuple[Metrics, ...]]:
    """Overall and per-band metrics; bands are chosen by the true (labelled) age."""
    true_age = np.asarray(true_age)
    overall = _metrics("all", true_age, female, pred_age, p_female)
    bands = []
    for label, low, high in AGE_BANDS:
        mask = (true_age >= low) & (true_age <= (high if high is not None else np.inf))
        bands.append(
            _metrics(
                label,
                true_age[mask],
                np.asarray(female)[mask],
                np.asarray(pred_age)[mask],
                np.asarray(p_female)[mask],
            )
        )
    return overall, tuple(bands)


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def evaluate(
    dataset_dir: str | Path,
    estimators: Sequence[AgeGenderEstimator],
    *,
    limit: int | None = None,
    seed: int = 0,
    chunk_size: int = 256,
    progress: bool = True,
) -> Evaluation:
    """Run each estimator on every (or a sample of ``limit``) labelled face and score it.

    ``limit`` draws a seeded random sample rather than the first rows, because
    labels.csv is sorted by file name, which starts with the age. Images are decoded
    ``chunk_size`` at a time so memory stays flat; each estimator batches by itself.
    ``faces_per_second`` counts estimation only, not JPEG decoding.
    """
    dataset_dir = Path(dataset_dir)
    faces = read_labels(dataset_dir)
    if limit is not None and limit < len(faces):
        faces = sorted(random.Random(seed).sample(faces, limit), key=lambda f: f.file)
    if not faces:
        raise ValueError(f"no labelled faces in {dataset_dir}")
    if not estimators:
        raise ValueError("no estimators to evaluate")

    ages: list[list[np.ndarray]] = [[] for _ in estimators]
    females: list[list[np.ndarray]] = [[] for _ in estimators]
    seconds = [0.0 for _ in estimators]
    with tqdm(total=len(faces), unit="face", desc="evaluate", disable=not progress) as bar:
        for start in range(0, len(faces), chunk_size):
            chunk = faces[start : start + chunk_size]
            images = [_load_rgb(dataset_dir / "images" / face.file) for face in chunk]
            # Estimators take one (N, H, W, 3) array, so group same-sized images.
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, image in enumerate(images):
                groups.setdefault(image.shape, []).append(i)
            for k, estimator in enumerate(estimators):
                age = np.empty(len(chunk), np.float32)
                female = np.empty(len(chunk), np.float32)
                began = time.perf_counter()
                for indices in groups.values():
                    batch = estimator.predict(np.stack([images[i] for i in indices]))
                    age[indices], female[indices] = batch.age, batch.p_female
                seconds[k] += time.perf_counter() - began
                ages[k].append(age)
                females[k].append(female)
            bar.update(len(chunk))

    true_age = np.array([f.age for f in faces])
    is_female = np.array([f.female for f in faces])
    results = []
    for k, estimator in enumerate(estimators):
        pred_age, p_female = np.concatenate(ages[k]), np.concatenate(females[k])
        overall, bands = compute_metrics(true_age, is_female, pred_age, p_female)
        results.append(
            EstimatorResult(
                estimator.name,
                estimator.checksum,
                overall,
                bands,
                len(faces) / seconds[k] if seconds[k] > 0 else math.inf,
                pred_age,
                p_female,
            )
        )
        logger.info(
            "%s: gender %.3f, age MAE %.2f on %d faces",
            estimator.name,
            overall.gender_accuracy,
            overall.age_mae,
            overall.n,
        )
    return Evaluation(str(dataset_dir), tuple(faces), tuple(results))


def _fmt(value: float, spec: str) -> str:
    return "–" if math.isnan(value) else format(value, spec)


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}%"


def format_markdown(evaluation: Evaluation) -> str:
    """A Markdown table: one row per estimator and group (all, then each age band)."""
    lines = [
        f"Dataset: {evaluation.dataset} ({len(evaluation.faces)} faces, whole images)",
        "",
        "| estimator | ages | n | gender acc. | age MAE | mean signed error |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for result in evaluation.results:
        for m in (result.overall, *result.bands):
            lines.append(
                f"| {result.estimator} | {m.group} | {m.n} | {_pct(m.gender_accuracy)} "
                f"| {_fmt(m.age_mae, '.2f')} | {_fmt(m.age_bias, '+.2f')} |"
            )
    lines.append("")
    for result in evaluation.results:
        lines.append(
            f"- {result.estimator}: weights sha256 {result.checksum[:12]}…, "
            f"{result.faces_per_second:.0f} faces/s (estimation only)"
        )
    return "\n".join(lines) + "\n"
