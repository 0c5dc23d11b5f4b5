"""Plain data types and interfaces shared by detectors and estimators.

Dataclasses rather than dicts with attribute access (insightface's ``Face``): a typo in a
field name should be an error, not a silent ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class Detection:
    """A face found in a photo: a pixel box and the detector's confidence."""

    x: int
    y: int
    width: int
    height: int
    score: float


@dataclass(frozen=True)
class AgeGenderBatch:
    """Estimates for a batch of faces, as arrays so batches stay cheap.

    ``age`` is in years, ``p_female`` is the model's probability that the face is female.
    """

    age: np.ndarray
    p_female: np.ndarray

    def __len__(self) -> int:
        return len(self.age)


@dataclass(frozen=True)
class FaceAttributes:
    """One analysed face: where it is (None when the whole image was used) and estimates."""

    detection: Detection | None
    age: float
    p_female: float

    @property
    def gender(self) -> str:
        """The label users filter by; 0.5 goes to male, as face-api.js does."""
        return "female" if self.p_female > 0.5 else "male"


@runtime_checkable
class AgeGenderEstimator(Protocol):
    """Estimates age and p(female) for aligned face crops.

    Implementations do their own resizing and normalisation, so callers pass plain RGB
    pixels of any square size.
    """

    name: str
    checksum: str
    input_size: int
    device: torch.device

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        """Estimate for ``(N, H, W, 3)`` uint8 RGB images (batched, no gradients)."""
        ...

    def predict_tensor(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimate for ``(N, H, W, 3)`` RGB 0..255 tensors already on ``device``.

        Returns ``(age, p_female)`` tensors on ``device``. Gradients are not disabled, so a
        guarded latent search can differentiate through the estimator.
        """
        ...


@runtime_checkable
class FaceDetector(Protocol):
    """Finds faces in arbitrary photos (imports, uploads); generator output needs none."""

    name: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one ``(H, W, 3)`` uint8 RGB image, best first."""
        ...
