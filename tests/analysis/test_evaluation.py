"""Scoring estimators on a labelled folder, and the ``facecat models evaluate`` command."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from PIL import Image

from analysis.cli import models_cli
from analysis.estimators import load_estimator
from analysis.evaluation import (
    AGE_BANDS,
    compute_metrics,
    evaluate,
    format_markdown,
    read_labels,
)
from analysis.types import AgeGenderBatch


def test_metrics_overall_and_per_band() -> None:
    true_age = np.array([5, 10, 15, 30, 70])
    female = np.array([True, False, True, False, True])
    pred_age = np.array([7.0, 10.0, 12.0, 40.0, 60.0])
    p_female = np.array([0.9, 0.5, 0.2, 0.1, 0.8])  # 0.5 counts as male
    overall, bands = compute_metrics(true_age, female, pred_age, p_female)
    assert overall.n == 5
    assert overall.gender_accuracy == pytest.approx(4 / 5)
    assert overall.age_mae == pytest.approx((2 + 0 + 3 + 10 + 10) / 5)
    assert overall.age_bias == pytest.approx((2 + 0 - 3 + 10 - 10) / 5)
    assert [b.group for b in bands] == [label for label, _, _ in AGE_BANDS]
    by_group = {b.group: b for b in bands}
    assert by_group["0–12"].n == 2 and by_group["0–12"].age_bias == pytest.approx(1.0)
    assert by_group["13–19"].gender_accuracy == 0.0
    assert by_group["60+"].age_mae == pytest.approx(10.0)
    empty = by_group["40–59"]
    assert empty.n == 0 and math.isnan(empty.age_mae) and math.isnan(empty.gender_accuracy)


def test_labels_must_be_well_formed(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("file,age,gender\na.jpg,30,male\nb.jpg,4,Female\n")
    faces = read_labels(tmp_path)
    assert [(f.file, f.age, f.female) for f in faces] == [("a.jpg", 30, False), ("b.jpg", 4, True)]
    (tmp_path / "labels.csv").write_text("file,age,gender\na.jpg,30,m\n")
    with pytest.raises(ValueError, match=r"labels.csv:2: gender"):
        read_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,age,gender\na.jpg,thirty,male\n")
    with pytest.raises(ValueError, match="bad age"):
        read_labels(tmp_path)


def _make_dataset(folder: Path, n: int = 12) -> Path:
    """Tiny labelled folder of noise images; two sizes so grouping is exercised."""
    images = folder / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["file,age,gender"]
    for i in range(n):
        size = 40 if i % 3 else 24
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i:02d}.png")
        rows.append(f"{i:02d}.png,{5 * i},{'female' if i % 2 else 'male'}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


class _AgeFromFileEstimator:
    """Predicts age = 10 x image side / 8 and p_female from the mean pixel; deterministic."""

    name = "fake"
    checksum = "f" * 64
    input_size = 40

    def __init__(self) -> None:
        self.batches: list[tuple[int, ...]] = []

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        self.batches.append(images.shape)
        n = len(images)
        return AgeGenderBatch(
            np.full(n, images.shape[1] * 10 / 8, np.float32),
            (images.reshape(n, -1).mean(axis=1) / 255).astype(np.float32),
        )


def test_evaluate_scores_every_face_with_each_estimator(tmp_path: Path) -> None:
    dataset = _make_dataset(tmp_path)
    fake = _AgeFromFileEstimator()
    result = evaluate(dataset, [fake], chunk_size=5, progress=False)
    assert len(result.faces) == 12
    (scores,) = result.results
    assert scores.estimator == "fake" and scores.checksum == fake.checksum
    # Same-sized images are batched together, within chunks of 5 files.
    assert {shape[1] for shape in fake.batches} == {24, 40}
    assert sum(shape[0] for shape in fake.batches) == 12
    expected_age = np.array([30.0 if i % 3 == 0 else 50.0 for i in range(12)])
    np.testing.assert_allclose(scores.age, expected_age)
    true_age = np.arange(12) * 5
    assert scores.overall.age_mae == pytest.approx(np.abs(expected_age - true_age).mean())
    assert sum(band.n for band in scores.bands) == 12
    assert scores.faces_per_second > 0

    table = format_markdown(result)
    assert "| estimator | ages | n | gender acc. | age MAE | mean signed error |" in table
    assert f"| fake | all | 12 | {100 * scores.overall.gender_accuracy:.1f}% |" in table
    assert "| fake | 60+ | 0 | – | – | – |" in table


def test_limit_draws_a_seeded_sample(tmp_path: Path) -> None:
    dataset = _make_dataset(tmp_path)
    first = evaluate(dataset, [_AgeFromFileEstimator()], limit=5, progress=False)
    again = evaluate(dataset, [_AgeFromFileEstimator()], limit=5, progress=False)
    other = evaluate(dataset, [_AgeFromFileEstimator()], limit=5, seed=1, progress=False)
    assert len(first.faces) == 5 and first.faces == again.faces
    assert first.faces != other.faces
    assert [f.file for f in first.faces] != [f"{i:02d}.png" for i in range(5)]


def test_evaluate_needs_estimators_and_faces(tmp_path: Path) -> None:
    dataset = _make_dataset(tmp_path)
    with pytest.raises(ValueError, match="no estimators"):
        evaluate(dataset, [], progress=False)
    (tmp_path / "labels.csv").write_text("file,age,gender\n")
    with pytest.raises(ValueError, match="no labelled faces"):
        evaluate(dataset, [_AgeFromFileEstimator()], progress=False)


@pytest.mark.model
@pytest.mark.slow
def test_faceapi_is_plausible_on_utkface(utkface_dir: Path, models_dir: Path) -> None:
    """64 real faces: loose bounds around the published 90.5% / 4.1 years."""
    estimator = load_estimator("faceapi", models_dir, device="cpu")
    (scores,) = evaluate(utkface_dir, [estimator], limit=64, progress=False).results
    assert scores.overall.n == 64
    assert scores.overall.gender_accuracy > 0.75
    assert scores.overall.age_mae < 7
    assert abs(scores.overall.age_bias) < 4
    children = scores.bands[0]
    assert children.n > 0 and children.age_mae < 5


# --- the CLI ---------------------------------------------------------------------------


def _cli_app(models_dir: Path) -> Flask:
    """A bare app with just the models group: the command needs only MODELS_DIR."""
    app = Flask(__name__)
    app.config["MODELS_DIR"] = str(models_dir)
    app.cli.add_command(models_cli)
    return app


def test_cli_rejects_unknown_estimators(tmp_path: Path) -> None:
    dataset = _make_dataset(tmp_path / "data")
    runner = _cli_app(tmp_path).test_cli_runner()
    result = runner.invoke(args=["models", "evaluate", str(dataset), "--estimator", "nope"])
    assert result.exit_code == 1
    assert "known: faceapi, wrn" in result.output


def test_cli_names_the_fetch_command_when_weights_are_missing(tmp_path: Path) -> None:
    dataset = _make_dataset(tmp_path / "data")
    runner = _cli_app(tmp_path / "empty").test_cli_runner()
    result = runner.invoke(args=["models", "evaluate", str(dataset), "--device", "cpu"])
    assert result.exit_code == 1
    assert "facecat models fetch" in result.output


@pytest.mark.model
def test_cli_prints_the_table(tmp_path: Path, models_dir: Path) -> None:
    dataset = _make_dataset(tmp_path / "data")
    runner = _cli_app(models_dir).test_cli_runner()
    args = ["models", "evaluate", str(dataset), "--limit", "6", "--device", "cpu"]
    result = runner.invoke(args=[*args, "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    assert "| faceapi | all | 6 |" in result.output
    assert "faces/s" in result.output
