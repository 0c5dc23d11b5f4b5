"""Fakes whose verdicts survive (or, on purpose, do not survive) the robust augmentations.

``tests.ingest.fakes`` writes the verdict into one corner pixel, which a flip or a shift
moves: right for pipeline tests, useless for the augmentation-robust gate. Here the
verdict is a constant colour offset over a per-seed texture (R - B = age, G - B =
100 * p_female), which flips, shifts, rescaling and JPEG all preserve to within a year
or two, while the texture keeps perceptual hashes distinct and the luma varied. A
*brittle* face carries a magenta marker in pixel (0, 0) that makes the estimator answer
its ``brittle_age`` instead: the identity copy and the two positive shifts (whose edge
padding repeats the corner) keep the marker, the six other copies lose it, so the plain
verdict is fooled and the median is not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from analysis.types import AgeGenderBatch

LATENT_DIM = 8


@dataclass(frozen=True)
class Face:
    """What a seed renders as: the true verdict, and whether it carries the marker."""

    age: float = 30.0
    p_female: float = 0.95
    brittle: bool = False


def mix(*shares: tuple[float, Face]) -> Callable[[int], Face]:
    """Seeds map to faces with the given shares (deterministic per seed)."""

    def pick(seed: int) -> Face:
        u = np.random.default_rng([seed & (2**63 - 1), 7]).random()
        total = 0.0
        for share, face in shares:
            total += share
            if u < total:
                return face
        return shares[-1][1]

    return pick


class RobustFakeGenerator:
    """Implements ``ingest.generators.Generator`` with verdicts chosen per seed."""

    name = "fakerobust"
    checksum = "a" * 64
    latent_dim = LATENT_DIM
    native_size = 64

    def __init__(self, faces: Callable[[int], Face]) -> None:
        self.faces = faces
        self.device = torch.device("cpu")
        self.generated = 0
        self._lock = threading.Lock()

    def sample_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        rows = []
        for seed in seeds:
            face = self.faces(int(seed))
            brittle = 1.0 if face.brittle else -1.0
            texture = np.random.default_rng([int(seed) & (2**63 - 1), 1]).random(LATENT_DIM - 3)
            rows.append([face.age, face.p_female, brittle, *texture])
        return torch.tensor(np.array(rows, dtype=np.float32).reshape(-1, LATENT_DIM))

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        images = []
        for row in latents.detach().numpy():
            key = np.frombuffer(row[3:].tobytes(), dtype=np.uint32)
            texture = np.kron(
                np.random.default_rng(key).uniform(30, 130, size=(8, 8)), np.ones((8, 8))
            )
            image = np.stack([texture + row[0], texture + row[1] * 100.0, texture], axis=-1)
            if row[2] >= 0:
                image[0, 0] = (255.0, 0.0, 255.0)
            images.append(image)
        return torch.tensor(np.array(images, dtype=np.float32).reshape(-1, 64, 64, 3))

    def generate(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        with self._lock:
            self.generated += len(latents)
        with torch.inference_mode():
            return self.render(latents).round().clamp(0, 255).to(torch.uint8)


class RobustFakeEstimator:
    """Reads the colour offsets back; the magenta marker makes it say ``brittle_age``.

    ``delay`` seconds per call make runs slow enough for requests to race.
    """

    name = "fakerobustest"
    checksum = "b" * 64
    input_size = 64

    def __init__(self, brittle_age: float = 45.0, delay: float = 0.0) -> None:
        self.device = torch.device("cpu")
        self.brittle_age = brittle_age
        self.delay = delay
        self.calls = 0

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        centre = np.asarray(images, dtype=np.float32)[:, 16:48, 16:48, :]
        age = (centre[..., 0] - centre[..., 2]).mean(axis=(1, 2))
        p_female = np.clip((centre[..., 1] - centre[..., 2]).mean(axis=(1, 2)) / 100.0, 0, 1)
        corner = np.asarray(images)[:, 0, 0, :].astype(int)
        marked = (corner[:, 0] > 240) & (corner[:, 1] < 15) & (corner[:, 2] > 240)
        age = np.where(marked, self.brittle_age, age)
        return AgeGenderBatch(age.astype(np.float32), p_female.astype(np.float32))
