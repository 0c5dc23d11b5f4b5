"""Seeded generation for ``/api/v1/generate``: (seed, gender, age) in, an image and a verdict out.

The photoreal generator and its style directions (``ingest.steering``) serve, whatever
generator ingest is configured with: the seed fixes a list of candidate styles (numpy
PCG64, the same on every machine); the gender picks the first candidate that reads
clearly as that gender, and the age moves that style along the age direction. So a seed
and a gender name one person, and varying ``age`` ages that person: the Face Studio
"lifetime" animation is one seed at ages 1..75. Nothing here optimises latents: an
unguarded search fools the estimator (DESIGN.md), and the endpoint reports what the
estimator *robustly* sees (the median over augmented copies, ``analysis.robust``) instead
of echoing what was asked, because an edit reaches only so far: a fixed person moves
about 22 years younger and 39 older before the face stops being a photo.

Unset ``gender`` or ``age`` come from the seed's own face, so "seed only" is reproducible
too. Output is byte-identical for identical parameters on the same device and thread
count: one face per forward pass (no batch-size effects), Lanczos resizing and the
encoders are deterministic.

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
from analysis.vocabulary import GENDERS
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
    """The photoreal generator, its style directions and the estimator that judges."""

    generator: Any  # ingest.generators.photoreal.PhotorealGenerator (or a test double)
    estimator: AgeGenderEstimator
    steering: Any  # ingest.steering.Steering


def load_studio_models(config: Mapping[str, Any]) -> StudioModels:
    """The photoreal generator (whatever ``GENERATOR`` ingest uses) and its directions.

    :raise RuntimeError: no directions fitted for these weights (the endpoint answers 503).
    """
    from analysis.device import configure_threads
    from analysis.estimators import load_estimator
    from ingest.generators import load_generator
    from ingest.steering import load_steering

    configure_threads(config["TORCH_THREADS"])
    generator = load_generator(
        "mobilestylegan",
        config["MODELS_DIR"],
        device=config["DEVICE"],
        truncation=config["TRUNCATION"],
    )
    steering = load_steering(generator)
    if steering is None:
        raise RuntimeError(
            "no style directions fitted for the photoreal generator's weights: run "
            "`facecat ingest fit-directions` and `facecat ingest calibrate-steering`"
        )
    estimator = load_estimator(
        config["ESTIMATOR"], config["MODELS_DIR"], device=generator.device, batch_size=16
    )
    return StudioModels(generator, estimator, steering)


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
        _check_options(gender, image_format)
        models = self.models
        pixels, gender, age = self._pixels(seed, gender, age)
        crops = models.generator.analysis_view(pixels[None]).crops
        verdict = robust_predict(models.estimator, crops)
        data = encode(resize(pixels, resolution), image_format, quality)
        return SeededFace(
            data=data,
            content_type=CONTENT_TYPES[image_format],
            gender=gender,
            age=age,
            estimated_age=float(verdict.age[0]),
            estimated_p_female=float(verdict.p_female[0]),
        )

    def portrait(
        self,
        seed: int,
        *,
        gender: str | None = None,
        age: float | None = None,
        resolution: int = 1024,
        image_format: str = "jpeg",
        quality: int = 90,
        nearest_age: bool = False,
    ) -> bytes:
        """The face ``render`` makes, encoded, without asking the estimator about it:
        avatars need the person, not a verdict, and skip the augmented predictions.

        ``nearest_age`` picks, among the seed's candidates of the gender, the one nearest
        ``age`` before the edit, instead of the first: the edit then has less to do, so a
        child or an old person still looks it (an avatar's seed names a person per
        filter, so it need not be one person across ages as a lifetime strip must).
        """
        _check_options(gender, image_format)
        pixels, _gender, _age = self._pixels(seed, gender, age, nearest_age)
        return encode(resize(pixels, resolution), image_format, quality)

    def _pixels(
        self, seed: int, gender: str | None, age: float | None, nearest_age: bool = False
    ) -> tuple[Any, str, float]:
        """The steered face as an HxWx3 uint8 array, with the gender and age it was given."""
        models = self.models
        latents, gender, age = _steered(models, seed, gender, age, nearest_age)
        return models.generator.generate(latents, batch_size=1)[0].cpu().numpy(), gender, age


def _check_options(gender: str | None, image_format: str) -> None:
    """A ValueError for a gender or format the renderers do not know."""
    if gender is not None and gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    if image_format not in CONTENT_TYPES:
        raise ValueError(f"image_format must be jpeg or webp, got {image_format!r}")


def _steered(
    models: StudioModels,
    seed: int,
    gender: str | None,
    age: float | None,
    nearest_age: bool = False,
) -> tuple[Any, str, float]:
    """The seed's person as ``gender`` (or their own) at ``age`` (or their own)."""
    import torch

    from ingest.ondemand.strategies import STEER_CANDIDATES
    from ingest.steering import pick_candidate

    steering = models.steering
    candidates = models.generator.candidate_styles(int(seed), STEER_CANDIDATES)
    gender = gender or steering.gender_of(candidates[0])
    # By default the person is the first candidate of the gender (not the nearest in
    # age): one seed and gender name one person at every age.
    nearest = nearest_age and age is not None
    chosen = pick_candidate(steering, candidates, gender, age or 0.0, nearest_age=nearest)
    person = candidates[chosen]
    target = float(steering.age.predict(person[None])[0]) if age is None else float(age)
    style = steering.shift_age(person[None], np.array([target]))
    return torch.from_numpy(style), gender, target


def studio_for(config: Mapping[str, Any]) -> SeededStudio:
    """A studio loading the configured models on first use."""
    return SeededStudio(lambda: load_studio_models(config))
