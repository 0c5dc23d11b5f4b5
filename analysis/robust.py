"""The augmentation-robust age/gender verdict shared by ingest, on-demand generation and
the coverage benchmark.

Why: a face whose estimate flips under a 4-pixel shift or a JPEG round trip was never
really "a 70-year-old woman" to the estimator; latent optimisation finds exactly such
faces (DESIGN.md, "On-demand generation"). Taking the median of the estimates over
a fixed set of small, label-preserving perturbations removes those brittle hits while
costing one batched estimator call. Every caller uses the same augmentations and the same
matching rule, so a face admitted by ingest, served on demand and counted in
docs/coverage.md passed the same test.

Only ``analysis.types`` is imported (analysis imports neither catalog nor ingest); age
bands are passed in as ``(low, high)`` pairs or any object with ``low``/``high``
attributes, such as ``ingest.bands.Band``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from analysis.types import AgeGenderBatch, AgeGenderEstimator
from analysis.vocabulary import GENDERS


@dataclass(frozen=True)
class Augmentation:
    """A named, deterministic, label-preserving perturbation of one HWC uint8 image."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.apply(image)


def _identity(image: np.ndarray) -> np.ndarray:
    return image


def _hflip(image: np.ndarray) -> np.ndarray:
    return image[:, ::-1]


def _shift(dx: int, dy: int) -> Callable[[np.ndarray], np.ndarray]:
    """Translate by (dx, dy) pixels, filling with the edge pixels.

    Edge replication rather than black borders: a black band is itself a strong,
    unrealistic cue that would test the estimator on something other than the face.
    """

    def apply(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        pad = max(abs(dx), abs(dy))
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        top, left = pad - dy, pad - dx
        return padded[top : top + h, left : left + w]

    return apply


def _scale(factor: float) -> Callable[[np.ndarray], np.ndarray]:
    """Zoom about the centre by ``factor`` (>1 crops in, <1 shrinks with edge fill)."""

    def apply(image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
        resized = np.asarray(
            Image.fromarray(np.ascontiguousarray(image)).resize(
                (new_w, new_h), Image.Resampling.BILINEAR
            )
        )
        if factor >= 1.0:
            top, left = (new_h - h) // 2, (new_w - w) // 2
            return resized[top : top + h, left : left + w]
        top, left = (h - new_h) // 2, (w - new_w) // 2
        return np.pad(
            resized, ((top, h - new_h - top), (left, w - new_w - left), (0, 0)), mode="edge"
        )

    return apply


def _jpeg(quality: int) -> Callable[[np.ndarray], np.ndarray]:
    """Encode and decode as JPEG, as a stored or served face would be."""

    def apply(image: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("RGB"))

    return apply


# Identity, flip, ±4 px shifts along each axis, 0.9/1.1 scale, JPEG q75: nine copies, so
# the median ignores up to four brittle ones.
DEFAULT: tuple[Augmentation, ...] = (
    Augmentation("identity", _identity),
    Augmentation("hflip", _hflip),
    Augmentation("shift_x+4", _shift(4, 0)),
    Augmentation("shift_x-4", _shift(-4, 0)),
    Augmentation("shift_y+4", _shift(0, 4)),
    Augmentation("shift_y-4", _shift(0, -4)),
    Augmentation("scale_0.9", _scale(0.9)),
    Augmentation("scale_1.1", _scale(1.1)),
    Augmentation("jpeg_q75", _jpeg(75)),
)


def augment_batch(
    images: np.ndarray, augmentations: Sequence[Augmentation] = DEFAULT
) -> np.ndarray:
    """``(A * N, H, W, 3)`` uint8: every augmentation of every image, augmentation-major."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"expected (N, H, W, 3) uint8 RGB images, got {images.dtype} {images.shape}"
        )
    if not augmentations:
        raise ValueError("at least one augmentation is needed")
    copies = [np.stack([aug(img) for img in images]) for aug in augmentations]
    return np.ascontiguousarray(np.concatenate(copies))


def robust_predict(
    estimator: AgeGenderEstimator,
    images_uint8_nhwc: np.ndarray,
    *,
    augmentations: Sequence[Augmentation] = DEFAULT,
) -> AgeGenderBatch:
    """Median age and median p_female over the augmented copies, in one estimator call.

    The estimator sees all ``len(augmentations) * N`` copies as one batch (it does its own
    internal batching), which is much cheaper than one call per augmentation.
    """
    images = np.asarray(images_uint8_nhwc)
    if len(images) == 0:
        return AgeGenderBatch(np.zeros(0, np.float32), np.zeros(0, np.float32))
    batch = estimator.predict(augment_batch(images, augmentations))
    shape = (len(augmentations), len(images))
    ages = np.asarray(batch.age, dtype=np.float32).reshape(shape)
    p_female = np.asarray(batch.p_female, dtype=np.float32).reshape(shape)
    return AgeGenderBatch(np.median(ages, axis=0), np.median(p_female, axis=0))


class _HasRange(Protocol):
    low: int
    high: int


def _bounds(band_or_range: _HasRange | tuple[float, float]) -> tuple[float, float]:
    if isinstance(band_or_range, tuple):
        low, high = band_or_range
    else:
        low, high = band_or_range.low, band_or_range.high
    if low > high:
        raise ValueError(f"empty age range {low}..{high}")
    return float(low), float(high)


def cell_match(
    batch: AgeGenderBatch,
    gender: str | None,
    band_or_range: _HasRange | tuple[float, float],
    gender_threshold: float,
) -> np.ndarray:
    """Boolean mask: the (robust) estimate is in the age range and confidently ``gender``.

    Gender is confident when ``p_female >= threshold`` (female) or ``1 - p_female >=
    threshold`` (male), the same max(p, 1-p) rule as the ingest gate; ``gender=None``
    accepts either gender but still demands confidence. Ages are rounded before the inclusive range
    test, as ``ingest.bands.Band.contains`` does.
    """
    if gender is not None and gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS} or None, got {gender!r}")
    if not 0.5 <= gender_threshold <= 1.0:
        raise ValueError(f"gender_threshold must be within 0.5..1, got {gender_threshold}")
    low, high = _bounds(band_or_range)
    age = np.rint(np.asarray(batch.age, dtype=np.float64))
    p_female = np.asarray(batch.p_female, dtype=np.float64)
    in_range = (age >= low) & (age <= high)
    is_female = p_female >= gender_threshold
    is_male = (1.0 - p_female) >= gender_threshold  # confidence form: no 1 - 0.8 rounding
    if gender == "female":
        confident = is_female
    elif gender == "male":
        confident = is_male
    else:
        confident = is_female | is_male
    return in_range & confident
