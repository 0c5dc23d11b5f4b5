"""Seeded generation for ``/api/v1/generate``: (seed, gender, age) in, an image and a verdict out.

Why the conditional generator (``ingest.generators.conditional``): the seed fixes the
latent noise (numpy PCG64, the same on every machine) and gender and age enter only as
the condition, so one seed rendered at several ages keeps its identity as far as the
model allows: the Face Studio "lifetime" animation is one seed at ages 1..75. Nothing
here optimises latents: an unguarded search fools the estimator (DESIGN.md), and the
endpoint reports what the estimator *robustly* sees (the median over augmented copies,
``analysis.robust``) instead of echoing what was asked, because the generator cannot
always reach the request (few faces over 60 exist in its training data).

Unset ``gender`` or ``age`` come from the seed's own condition coordinates, so
"seed only" is reproducible too. Output is byte-identical for identical parameters on the
same device and thread count: one face per forward pass (no batch-size effects),
Lanczos resizing and the encoders are deterministic.

Models load once per process, on first use, under a lock (``SeededStudio.models``), so
the web process starts without torch and concurrent first requests load once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.robust import robust_predict
from analysis.types import AgeGenderEstimator
from ingest.generators.conditional import (
    GENDERS,
    ConditionalGenerator,
    condition_from_latents,
    latents_with_condition,
)
from ingest.imaging import CONTENT_TYPES, encode, resize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeededFace:
    """One generated image and what the robust estimator says it shows."""

    data: bytes
    content_type: str
    gender: str  # what was rendered (asked for, or the seed's own)
    age: float
    estimated_age: float
    estimated_p_female: float

    @property
    def estimated_gender(self) -> str:
        """The estimator's verdict (0.5 goes to male, as face-api.js does)."""
        return "female" if self.estimated_p_female > 0.5 else "male"


@dataclass
class StudioModels:
    """The conditional generator and the estimator that judges its output."""

    generator: ConditionalGenerator
    estimator: AgeGenderEstimator


def load_studio_models(config: Mapping[str, Any]) -> StudioModels:
    """The configured models: the conditional generator and ``FACECAT_ESTIMATOR``."""
    from analysis.device import configure_threads
    from analysis.estimators import load_estimator

    configure_threads(config["TORCH_THREADS"])
    generator = ConditionalGenerator.from_models_dir(config["MODELS_DIR"], device=config["DEVICE"])
    estimator = load_estimator(
        config["ESTIMATOR"], config["MODELS_DIR"], device=generator.device, batch_size=16
    )
    return StudioModels(generator, estimator)


class SeededStudio:
    """Renders seeded faces; loads its models once, lazily, thread-safely."""

    def __init__(self, loader: Callable[[], StudioModels]) -> None:
        self._loader = loader
        self._models: StudioModels | None = None
        self._lock = threading.Lock()

    @property
    def models(self) -> StudioModels:
        """The models, loaded by the first caller (others wait on the lock, then reuse)."""
        if self._models is None:
            with self._lock:
                if self._models is None:
                    self._models = self._loader()
                    logger.info("seeded generation models loaded")
        return self._models

    def render(
        self,
        seed: int,
        *,
        gender: str | None = None,
        age: float | None = None,
        resolution: int = 256,
        image_format: str = "jpeg",
        quality: int = 90,
    ) -> SeededFace:
        """One face for ``seed`` as ``gender`` at ``age`` (None: the seed's own)."""
        if gender is not None and gender not in GENDERS:
            raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
        if image_format not in CONTENT_TYPES:
            raise ValueError(f"image_format must be jpeg or webp, got {image_format!r}")
        models = self.models
        latents = models.generator.sample_latents([seed])
        own_female, own_age = condition_from_latents(latents)
        gender = gender or ("female" if bool(own_female[0]) else "male")
        age = float(own_age[0]) if age is None else float(age)
        latents = latents_with_condition(latents, gender, age)
        pixels = models.generator.generate(latents, batch_size=1)[0].cpu().numpy()
        verdict = robust_predict(models.estimator, pixels[None].astype(np.uint8))
        data = encode(resize(pixels, resolution), image_format, quality)
        return SeededFace(
            data=data,
            content_type=CONTENT_TYPES[image_format],
            gender=gender,
            age=age,
            estimated_age=float(verdict.age[0]),
            estimated_p_female=float(verdict.p_female[0]),
        )


def studio_for(config: Mapping[str, Any]) -> SeededStudio:
    """A studio loading the configured models on first use."""
    return SeededStudio(lambda: load_studio_models(config))
