"""Age/gender estimators behind one interface, chosen by short name.

Every estimator class in ``ESTIMATORS`` implements ``analysis.types.AgeGenderEstimator``
and has a ``from_models_dir(models_dir, device=..., batch_size=...)`` classmethod that
finds its verified weight files through ``analysis.weights``, so ``load_estimator`` (and
the ``MODEL_*`` settings that name an estimator) need no per-backend code.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch

from analysis import weights
from analysis.device import resolve_device
from analysis.faceapi import INPUT_SIZE, AgeGenderNet, predict_age_gender
from analysis.types import AgeGenderBatch, AgeGenderEstimator
from analysis.wrn import WideResNetEstimator

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64


class FaceApiEstimator:
    """face-api.js's AgeGenderNet (TinyXception), the default estimator.

    ``predict`` is for bulk work (numpy in, numpy out, no autograd); ``predict_tensor``
    keeps the autograd graph so a latent search can differentiate through it.
    """

    name = "faceapi"
    input_size = INPUT_SIZE

    def __init__(
        self,
        manifest_path: str | Path,
        bin_path: str | Path,
        device: torch.device | str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        """Load weights from explicit (already verified) paths; see ``from_models_dir``.

        :raise analysis.faceapi.ModelSignatureError: the files are not this network.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        self.batch_size = batch_size
        self.checksum = hashlib.sha256(Path(bin_path).read_bytes()).hexdigest()
        self.net = AgeGenderNet.from_files(manifest_path, bin_path).to(self.device)
        logger.info(
            "face-api age/gender estimator on %s (sha256 %s)", self.device, self.checksum[:12]
        )

    @classmethod
    def from_models_dir(
        cls,
        models_dir: str | Path,
        device: torch.device | str = "auto",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> FaceApiEstimator:
        """Load from a models folder filled by ``facecat models fetch``.

        :raise analysis.weights.WeightsError: a file is missing or fails its checksum.
        """
        return cls(
            weights.weight_path("faceapi-agegender-manifest", models_dir),
            weights.weight_path("faceapi-agegender-bin", models_dir),
            device=device,
            batch_size=batch_size,
        )

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        """Estimate for ``(N, H, W, 3)`` uint8 RGB images, ``batch_size`` at a time."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (N, H, W, 3) RGB images, got shape {images.shape}")
        ages: list[np.ndarray] = []
        p_female: list[np.ndarray] = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                if not (chunk.flags.c_contiguous and chunk.flags.writeable):
                    # torch.from_numpy warns on read-only arrays (e.g. from PIL images).
                    chunk = np.array(chunk, order="C")
                age, female = self.predict_tensor(torch.from_numpy(chunk).to(self.device))
                ages.append(age.float().cpu().numpy())
                p_female.append(female.float().cpu().numpy())
        if not ages:
            return AgeGenderBatch(np.zeros(0, np.float32), np.zeros(0, np.float32))
        return AgeGenderBatch(np.concatenate(ages), np.concatenate(p_female))

    def predict_tensor(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Estimate for ``(N, H, W, 3)`` RGB 0..255 tensors on ``device``; keeps gradients."""
        return predict_age_gender(self.net, images)


# Short name -> class; add further backends here. Each class implements
# AgeGenderEstimator and ``from_models_dir(models_dir, device, batch_size)``.
ESTIMATORS: dict[str, type] = {
    FaceApiEstimator.name: FaceApiEstimator,
    WideResNetEstimator.name: WideResNetEstimator,
}


def load_estimator(
    name: str,
    models_dir: str | Path,
    device: torch.device | str = "auto",
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> AgeGenderEstimator:
    """Instantiate the estimator registered as ``name`` from the models folder.

    :raise ValueError: no estimator of that name (the message lists the known ones).
    :raise analysis.weights.WeightsError: its weight files are missing or corrupt.
    """
    try:
        cls = ESTIMATORS[name]
    except KeyError:
        known = ", ".join(sorted(ESTIMATORS))
        raise ValueError(f"unknown age/gender estimator {name!r}; known: {known}") from None
    return cls.from_models_dir(models_dir, device=device, batch_size=batch_size)
