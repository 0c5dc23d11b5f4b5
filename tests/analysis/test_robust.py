"""The augmentation-robust verdict: augmentations, median, cell matching, real estimator."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.robust import DEFAULT, augment_batch, cell_match, robust_predict
from analysis.types import AgeGenderBatch


class FakeEstimator:
    """Age = mean red value / 2, p_female = mean green / 255; counts its calls.

    Optionally "fooled": it answers age 70 / p_female 1.0 for one exact pixel array, the
    way an optimised latent fools a real estimator only at one precise input.
    """

    name = "fake"
    checksum = "0" * 64
    input_size = 64
    device = torch.device("cpu")

    def __init__(self, fooled_by: np.ndarray | None = None) -> None:
        self.calls = 0
        self.seen = 0
        self.fooled_by = fooled_by

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        self.calls += 1
        self.seen += len(images)
        age = images[..., 0].reshape(len(images), -1).mean(1) / 2.0
        p_female = images[..., 1].reshape(len(images), -1).mean(1) / 255.0
        if self.fooled_by is not None:
            for i, image in enumerate(images):
                if np.array_equal(image, self.fooled_by):
                    age[i], p_female[i] = 70.0, 1.0
        return AgeGenderBatch(age.astype(np.float32), p_female.astype(np.float32))

    def predict_tensor(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.predict(images.detach().cpu().numpy().astype(np.uint8))
        return torch.from_numpy(batch.age), torch.from_numpy(batch.p_female)


def _uniform(red: int, green: int, n: int = 1, size: int = 32) -> np.ndarray:
    images = np.zeros((n, size, size, 3), np.uint8)
    images[..., 0], images[..., 1], images[..., 2] = red, green, 100
    return images


def test_augment_batch_is_augmentation_major_and_keeps_shape() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)
    out = augment_batch(images)
    assert out.shape == (len(DEFAULT) * 3, 40, 40, 3)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[:3], images)  # identity first
    np.testing.assert_array_equal(out[3:6], images[:, :, ::-1])  # then the flip


def test_shift_moves_content_and_fills_from_the_edge() -> None:
    image = np.zeros((1, 16, 16, 3), np.uint8)
    image[0, 8, 8] = 255
    names = [aug.name for aug in DEFAULT]
    shifted = DEFAULT[names.index("shift_x+4")](image[0])
    assert shifted[8, 12, 0] == 255 and shifted[8, 8, 0] == 0
    shifted = DEFAULT[names.index("shift_y-4")](image[0])
    assert shifted[4, 8, 0] == 255


def test_scale_and_jpeg_keep_size() -> None:
    image = np.random.default_rng(1).integers(0, 256, (33, 33, 3), dtype=np.uint8)
    for aug in DEFAULT:
        assert aug(image).shape == image.shape, aug.name


def test_robust_predict_uses_one_call_and_takes_the_median() -> None:
    estimator = FakeEstimator()
    images = np.concatenate([_uniform(60, 250), _uniform(120, 10)])
    batch = robust_predict(estimator, images)
    assert estimator.calls == 1
    assert estimator.seen == len(DEFAULT) * 2
    # Uniform images survive every augmentation (JPEG within a grey level or two).
    np.testing.assert_allclose(batch.age, [30.0, 60.0], atol=1.0)
    np.testing.assert_allclose(batch.p_female, [250 / 255, 10 / 255], atol=0.01)


def test_robust_predict_rejects_a_brittle_hit() -> None:
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    estimator = FakeEstimator(fooled_by=image[0])
    plain = estimator.predict(image)
    assert plain.age[0] == 70.0 and plain.p_female[0] == 1.0
    robust = robust_predict(estimator, image)
    assert robust.age[0] < 70.0
    assert not cell_match(robust, "female", (60, 100), 0.8)[0]
    assert cell_match(plain, "female", (60, 100), 0.8)[0]


def test_robust_predict_empty_batch() -> None:
    batch = robust_predict(FakeEstimator(), np.zeros((0, 8, 8, 3), np.uint8))
    assert len(batch) == 0


def test_robust_predict_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        robust_predict(FakeEstimator(), np.zeros((1, 8, 8, 3), np.float32))


@dataclass(frozen=True)
class _Band:
    low: int
    high: int


def test_cell_match_rules() -> None:
    batch = AgeGenderBatch(
        age=np.array([12.4, 12.6, 30.0, 30.0, 65.0, 65.0]),
        p_female=np.array([0.9, 0.9, 0.79, 0.1, 0.2, 0.5]),
    )
    # 12.4 rounds into 0-12, 12.6 does not (rounded, inclusive, like catalog Band.contains).
    np.testing.assert_array_equal(
        cell_match(batch, "female", _Band(0, 12), 0.8), [True, False, False, False, False, False]
    )
    np.testing.assert_array_equal(
        cell_match(batch, "male", (20, 39), 0.8), [False, False, False, True, False, False]
    )
    np.testing.assert_array_equal(
        cell_match(batch, "male", (60, 100), 0.8), [False, False, False, False, True, False]
    )
    # No gender asked: either, but still confident.
    np.testing.assert_array_equal(
        cell_match(batch, None, (0, 100), 0.8), [True, True, False, True, True, False]
    )


@pytest.mark.parametrize(
    ("gender", "band", "threshold"),
    [("other", (0, 10), 0.8), ("male", (10, 0), 0.8), ("male", (0, 10), 0.3)],
)
def test_cell_match_rejects_bad_arguments(gender: str, band: tuple, threshold: float) -> None:
    batch = AgeGenderBatch(np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError):
        cell_match(batch, gender, band, threshold)


def _load_real_faces(utkface_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` UTKFace chips read at test time (never stored in the repository)."""
    rows = list(csv.DictReader((utkface_dir / "labels.csv").open()))
    picked = [rows[i] for i in np.random.default_rng(0).choice(len(rows), n, replace=False)]
    images = []
    for row in picked:
        with Image.open(utkface_dir / "images" / row["file"]) as img:
            images.append(np.asarray(img.convert("RGB").resize((112, 112))))
    ages = np.array([float(r["age"]) for r in picked])
    female = np.array([r["gender"] == "female" for r in picked])
    return np.stack(images), ages, female


@pytest.mark.model
@pytest.mark.slow
def test_real_estimator_robust_verdict_agrees_with_labels(
    models_dir: Path, utkface_dir: Path
) -> None:
    from analysis.estimators import load_estimator

    estimator = load_estimator("faceapi", models_dir, device="cpu")
    images, ages, female = _load_real_faces(utkface_dir, 96)
    plain = estimator.predict(images)
    robust = robust_predict(estimator, images)
    # Real photos are not brittle: the median stays close to the plain estimate...
    assert np.median(np.abs(robust.age - plain.age)) < 3.0
    # ...and is about as accurate as the published figures (90.5% gender, MAE 4.1 years).
    assert np.mean((robust.p_female > 0.5) == female) >= 0.8
    assert np.mean(np.abs(robust.age - ages)) < 8.0
