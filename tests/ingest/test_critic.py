"""The age and gender critic: held-out split, training, loading, and its use in adapter runs.

The faces are synthetic (UTKFace must never be copied into the repo): gender is coded by
hue and age by brightness, so a critic that learns anything at all must beat chance on
the held-out faces, and one that learns nothing fails the test.
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

from ingest import critic as critic_module
from ingest import training
from ingest.generators import conditional as cond
from tests.factories import save_conditional_weights

AGES = (5, 16, 30, 50, 75)


@pytest.fixture(scope="module")
def coded_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 faces per (gender, band) cell: red-ish women, blue-ish men, brighter when older."""
    root = tmp_path_factory.mktemp("coded")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "age", "gender"])
        i = 0
        for gender in cond.GENDERS:
            for age in AGES:
                for _ in range(12):
                    level = 40 + 2 * age
                    colour = (level + 60, 40, 60) if gender == "female" else (60, 40, level + 60)
                    noise = rng.normal(0, 12, (72, 72, 3))
                    pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                    Image.fromarray(pixels).save(root / "images" / f"{i}.png")
                    writer.writerow([f"{i}.png", age, gender])
                    i += 1
    return root


def test_holdout_split_is_stratified_disjoint_and_reproducible() -> None:
    female = torch.tensor([0.0] * 40 + [1.0] * 20 + [0.0])
    ages = torch.tensor([5.0] * 20 + [16.0] * 20 + [30.0] * 20 + [70.0])
    train, held = critic_module.holdout_split(female, ages, 0.25, seed=1)
    assert set(train).isdisjoint(held)
    assert sorted([*train, *held]) == list(range(61))
    # A quarter of each cell is held out; a cell of one face stays in training.
    assert [int(((ages[held] == a) & (female[held] == f)).sum()) for a, f in
            ((5.0, 0.0), (16.0, 0.0), (30.0, 1.0), (70.0, 0.0))] == [5, 5, 5, 0]  # fmt: skip
    again = critic_module.holdout_split(female, ages, 0.25, seed=1)
    assert np.array_equal(held, again[1])
    assert not np.array_equal(held, critic_module.holdout_split(female, ages, 0.25, seed=2)[1])
    with pytest.raises(Exception, match="fraction"):
        critic_module.holdout_split(female, ages, 1.0, seed=1)


@pytest.fixture(scope="module")
def trained_critic(coded_faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("critic")
    result = CliRunner().invoke(
        critic_module.train_critic_command,
        [str(coded_faces), "--out", str(out), "--epochs", "12", "--batch-size", "16",
         "--holdout", "0.25", "--seed", "3", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "female 13-19" in result.output and "band" in result.output
    return out / "critic.pt"


def test_critic_learns_from_training_faces_and_is_checked_on_held_out_ones(
    trained_critic: Path,
) -> None:
    saved = torch.load(trained_critic, weights_only=False)
    record = saved["record"]
    held = record["held_out"]
    assert held["faces"] == len(record["held_out_indices"]) == 30  # 3 of 12 in each cell
    assert 1 <= record["best_epoch"] <= 12
    # Gender is coded by hue: a critic that learnt it gets the held-out faces right.
    for cell, figures in held["cells"].items():
        assert figures["gender_accuracy"] >= 0.66, (cell, figures)
    losses = [h["held_out_loss"] for h in record["history"]]
    assert min(losses) < losses[0]
    summary = json.loads(trained_critic.with_name("critic.json").read_text())
    assert summary["sha256"] == cond.sha256_file(trained_critic)
    assert not (trained_critic.parent / "best_state.pt").exists()


def test_loaded_critic_is_frozen_and_refuses_other_files(
    trained_critic: Path, tmp_path: Path
) -> None:
    critic = critic_module.load_critic(trained_critic)
    assert not critic.training
    assert not any(p.requires_grad for p in critic.parameters())
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    p_female, age = critic.predict(x)
    assert p_female.shape == age.shape == (3,)
    other = save_conditional_weights(cond.ConditionalDCGAN().state_dict(), tmp_path / "g.pt")
    with pytest.raises(Exception, match="not a critic"):
        critic_module.load_critic(other)


def _adapter_run(dataset: Path, out: Path, init: Path, critic: Path | None) -> Path:
    config = training.TrainConfig(
        dataset_dir=str(dataset), out=str(out), steps=3, seed=3, device="cpu",
        sample_every=100, checkpoint_every=100, init="scratch", batch_size=8,
        export=str(out / "export" / "conditional.pt"), init_from=str(init),
        d_warmup_steps=1, band_weights=(1, 6, 1, 0.5, 0.5), adapter="male", lr_g=1e-2,
        critic=str(critic) if critic else None,
    )  # fmt: skip
    return training.train(config)


def test_adapter_run_takes_its_age_and_gender_signal_from_the_critic(
    coded_faces: Path, trained_critic: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "RECALIBRATION_BATCHES", 2)
    torch.manual_seed(0)
    init = save_conditional_weights(cond.ConditionalDCGAN().state_dict(), tmp_path / "init.pt")
    critic_bytes = trained_critic.read_bytes()
    with_critic = _adapter_run(coded_faces, tmp_path / "critic_run", init, trained_critic)
    without = _adapter_run(coded_faces, tmp_path / "plain_run", init, None)
    provenance = json.loads(with_critic.with_suffix(".json").read_text())
    assert provenance["adapter"]["critic"]["sha256"] == cond.sha256_file(trained_critic)
    assert provenance["config"]["critic"] == str(trained_critic)
    assert trained_critic.read_bytes() == critic_bytes  # frozen: never written
    # Same seed, same data: only the age/gender judge differs, so the boys' adapter differs.
    a, b = torch.load(with_critic, weights_only=True), torch.load(without, weights_only=True)
    boys = [k for k in a if k.startswith("adapters.0.") and k.endswith(".up")]
    assert boys and any(not torch.equal(a[k], b[k]) for k in boys)


def test_cli_refuses_a_critic_without_an_adapter(coded_faces: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        training.train_command,
        [str(coded_faces), "--out", str(tmp_path), "--steps", "1",
         "--critic", str(coded_faces / "labels.csv")],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "--critic" in result.output
    assert not (tmp_path / "last.pt").exists()


def test_facecat_models_train_critic_runs_through_the_app_cli(
    app, coded_faces: Path, tmp_path: Path
) -> None:
    result = app.test_cli_runner().invoke(
        args=["models", "train-critic", str(coded_faces), "--out", str(tmp_path),
              "--epochs", "1", "--batch-size", "16", "--device", "cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "critic.pt").is_file()
    assert "best epoch 1 of 1" in result.output


def test_train_critic_refuses_a_dataset_too_small_to_check(tmp_path: Path) -> None:
    root = tmp_path / "one_each"
    (root / "images").mkdir(parents=True)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "age", "gender"])
        for i, (age, gender) in enumerate(((5, "male"), (30, "female"))):
            Image.new("RGB", (64, 64), (i * 100, 50, 50)).save(root / "images" / f"{i}.png")
            writer.writerow([f"{i}.png", age, gender])
    result = CliRunner().invoke(
        critic_module.train_critic_command,
        [str(root), "--out", str(tmp_path / "out"), "--epochs", "1", "--device", "cpu"],
    )
    assert result.exit_code != 0
    assert "hold any out" in result.output
    assert not (tmp_path / "out" / "critic.pt").exists()
