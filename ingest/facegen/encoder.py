"""The inversion's start: a linear map from what face-api sees in a face to a style.

Why: twelve Adam steps cannot carry a W+ code from a wrong start (the mean face, or the
best of a few random ones) to another gender, hair or age; the previous start made most
inputs collapse toward one prototype face. A ridge regression, fitted on faces this
generator made (so the style behind each face is known), maps the aligned photo's
face-api descriptor, the estimator's age and p(female) and the aligned frame at 8 x 8 px
(the descriptor ignores hair colour, skin tone and light; these pixels carry them) to a
style near that person's
(``tests/perf/fit_facegen_encoder.py`` fits it and writes ``encoder.npz`` with its
provenance). It is linear and small (322 x 512), so it costs nothing at run time, and it
is refused for other generator weights, as ``ingest.steering``'s directions are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ingest.facegen.align import face_crop_box

ENCODER_FILE = Path(__file__).resolve().with_name("encoder.npz")
AGE_SCALE = 50.0  # the estimator's age enters as age / 50, p(female) as p - 0.5
PIXELS = 8  # the aligned frame, area-pooled to 8 x 8 px, RGB in 0..1


def pixels_of(frames: np.ndarray) -> np.ndarray:
    """``(N, 192)``: aligned ``(N, S, S, 3)`` uint8 frames at ``PIXELS`` px, in 0..1."""
    small = [cv2.resize(f, (PIXELS, PIXELS), interpolation=cv2.INTER_AREA) for f in frames]
    return np.stack(small).reshape(len(frames), -1).astype(np.float64) / 255.0


def features_of(
    descriptors: np.ndarray, age: np.ndarray, female: np.ndarray, pixels: np.ndarray
) -> np.ndarray:
    """``(N, 322)``: the descriptor, the scaled age, the centred p(female), the pixels."""
    return np.concatenate(
        [
            np.asarray(descriptors, np.float64),
            np.asarray(age, np.float64)[:, None] / AGE_SCALE,
            np.asarray(female, np.float64)[:, None] - 0.5,
            np.asarray(pixels, np.float64),
        ],
        axis=1,
    )


def crop_features(
    descriptor: Any, estimator: Any, frames: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Descriptors, ages and p(female) of the face crops of aligned ``(N, S, S, 3)`` uint8
    frames (``align.align_face``'s framing)."""
    from analysis.recognition import face_descriptors

    x0, y0, x1, y1 = face_crop_box(frames.shape[1])
    crops = np.ascontiguousarray(frames[:, y0:y1, x0:x1])
    desc = face_descriptors(descriptor, crops).cpu().numpy()
    if estimator is None:
        return desc, np.full(len(frames), 30.0), np.full(len(frames), 0.5)
    estimates = estimator.predict(crops)
    return desc, np.asarray(estimates.age, np.float64), np.asarray(estimates.p_female, np.float64)


@dataclass(frozen=True)
class Encoder:
    """``style ≈ ((features − x_mean) / x_scale) @ matrix + y_mean``."""

    matrix: np.ndarray  # (F, 512)
    x_mean: np.ndarray  # (F,)
    x_scale: np.ndarray  # (F,)
    y_mean: np.ndarray  # (512,)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alpha: float, provenance: dict) -> Encoder:
        """Ridge regression of ``y`` (N, D) on standardised ``x`` (N, F)."""
        x = np.asarray(x, np.float64)
        y = np.asarray(y, np.float64)
        x_mean, x_scale = x.mean(0), x.std(0) + 1e-8
        xs = (x - x_mean) / x_scale
        y_mean = y.mean(0)
        gram = xs.T @ xs + alpha * np.eye(xs.shape[1])
        matrix = np.linalg.solve(gram, xs.T @ (y - y_mean))
        return cls(matrix, x_mean, x_scale, y_mean, dict(provenance))

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        return (
            (np.asarray(x, np.float64) - self.x_mean) / self.x_scale
        ) @ self.matrix + self.y_mean

    def predict(
        self, descriptors: np.ndarray, age: np.ndarray, female: np.ndarray, frames: np.ndarray
    ) -> np.ndarray:
        """``(N, 512)`` float32 styles for descriptors ``(N, 128)``, the estimates and the
        aligned ``(N, S, S, 3)`` uint8 frames."""
        features = features_of(descriptors, age, female, pixels_of(frames))
        return self.predict_features(features).astype(np.float32)

    def save(self, path: str | Path = ENCODER_FILE) -> None:
        np.savez_compressed(
            path,
            matrix=self.matrix.astype(np.float16),  # a start needs no more precision
            x_mean=self.x_mean.astype(np.float32),
            x_scale=self.x_scale.astype(np.float32),
            y_mean=self.y_mean.astype(np.float32),
            provenance=np.array(json.dumps(self.provenance)),
        )

    @classmethod
    def load(
        cls, path: str | Path = ENCODER_FILE, *, generator_checksum: str | None = None
    ) -> Encoder:
        """Read an encoder file; refuse one fitted for other generator weights."""
        with np.load(path) as data:
            provenance = json.loads(str(data["provenance"]))
            fitted_for = str(provenance.get("generator_checksum", ""))
            if generator_checksum is not None and fitted_for != generator_checksum:
                raise ValueError(
                    f"{path} was fitted for generator {fitted_for[:12]}, not "
                    f"{generator_checksum[:12]}: re-run tests/perf/fit_facegen_encoder.py"
                )
            arrays = [
                np.asarray(data[k], np.float64) for k in ("matrix", "x_mean", "x_scale", "y_mean")
            ]
        if not all(np.isfinite(a).all() for a in arrays) or math.prod(arrays[0].shape) == 0:
            raise ValueError(f"{path}: not a fitted encoder")
        return cls(*arrays, provenance)


def load_encoder(generator: Any) -> Encoder | None:
    """The shipped encoder for ``generator``'s weights, or None where there is none."""
    if not ENCODER_FILE.exists():
        return None
    return Encoder.load(ENCODER_FILE, generator_checksum=generator.checksum)
