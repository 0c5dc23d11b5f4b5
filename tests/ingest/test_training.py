"""The training loop on a tiny synthetic dataset: checkpoints, resume, export, determinism.

The faces are random colour blobs made here (UTKFace must never be copied into the repo).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from ingest import training
from ingest.generators.conditional import ConditionalGenerator, identity_calibration, sha256_file


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "age", "gender"])
        for i, (age, gender) in enumerate(
            [(5, "male"), (15, "female"), (30, "male"), (50, "female"), (80, "male")] * 2
        ):
            pixels = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / f"{i}.jpg")
            writer.writerow([f"{i}.jpg", age, gender])
    return root


def _config(dataset: Path, out: Path, steps: int, **kw) -> training.TrainConfig:
    return training.TrainConfig(
        dataset_dir=str(dataset), out=str(out), steps=steps, batch_size=4, seed=3,
        device="cpu", sample_every=2, checkpoint_every=1, init="scratch", threads=None,
        export=str(out / "export" / "conditional.pt"), **kw,
    )  # fmt: skip


def test_train_checkpoints_resumes_and_exports(dataset: Path, tmp_path: Path) -> None:
    first = training.train(_config(dataset, tmp_path / "a", steps=2))
    assert first is not None and first.is_file()
    assert (tmp_path / "a" / "last.pt").is_file()
    assert (tmp_path / "a" / "samples" / "step_000002.png").is_file()
    provenance = json.loads(first.with_suffix(".json").read_text())
    assert provenance["sha256"] == sha256_file(first)
    assert provenance["steps"] == 2
    assert "non-commercial" in provenance["licence"].lower()
    exported = ConditionalGenerator(first, device="cpu")
    assert exported.checksum == provenance["sha256"]
    # The export writes the calibration buffers, as identity (calibration is a later step).
    state = torch.load(first, weights_only=True)
    for name, value in identity_calibration().items():
        assert torch.equal(state[name], value), name
    assert provenance["calibration"] is None

    resumed = training.train(_config(dataset, tmp_path / "a", steps=3))
    assert json.loads(resumed.with_suffix(".json").read_text())["steps"] == 3

    # Reproducible: a straight 3-step run gives the same weights as 2 + resume 1.
    straight = training.train(_config(dataset, tmp_path / "b", steps=3))
    a = torch.load(resumed, weights_only=True)
    b = torch.load(straight, weights_only=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_time_budget_stops_cleanly(dataset: Path, tmp_path: Path) -> None:
    path = training.train(_config(dataset, tmp_path, steps=1000, max_seconds=0.0))
    provenance = json.loads(path.with_suffix(".json").read_text())
    assert provenance["steps"] == 0
    assert (tmp_path / "last.pt").is_file()


def test_cli_refuses_to_overwrite_a_run_without_resume(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"x")
    result = CliRunner().invoke(
        training.train_command, [str(dataset), "--out", str(tmp_path), "--steps", "1"]
    )
    assert result.exit_code != 0
    assert "--resume" in result.output


def test_diff_augment_keeps_shape_and_gradients() -> None:
    x = torch.randn(3, 3, 64, 64, requires_grad=True)
    y = training.diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None
    with pytest.raises(ValueError):
        training.diff_augment(x, "rotate")


def test_balanced_sampling_covers_every_cell(dataset: Path) -> None:
    data = training.FaceDataset(dataset)
    idx = data.sample(np.random.default_rng(0), 2000)
    ages = data.ages[idx].numpy()
    assert len(data.cells) == 5
    counts = np.bincount([training.band_index(int(a)) for a in ages], minlength=5)
    assert counts.min() > 300  # 5 cells here, ~400 each when balanced
