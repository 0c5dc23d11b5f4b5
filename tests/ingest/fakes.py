"""Tiny stand-ins for the Generator and AgeGenderEstimator protocols, and a faulty Storage.

The fake generator makes a distinct smooth texture per seed (so perceptual hashes differ
like real faces' do) and writes the verdict the test wants into the first pixel; the fake
estimator reads it back. A test therefore decides, per seed, what the "estimator" says,
and runs the real pipeline around it in milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from analysis.types import AgeGenderBatch
from catalog.storage import Storage, StorageError

LATENT_DIM = 8


@dataclass(frozen=True)
class Verdict:
    """What the fake estimator will say about a face, and how bright the face is."""

    age: float = 30.0
    p_female: float = 0.95
    brightness: float = 1.0
    texture: int | None = None  # same texture for the same value: a near-duplicate face


def always(verdict: Verdict) -> Callable[[int], Verdict]:
    """Every seed gets the same verdict."""
    return lambda seed: verdict


class FakeGenerator:
    """Seeds → latents → 64x64 textures; implements ``ingest.generators.Generator``."""

    name = "fake"
    checksum = "f" * 64
    latent_dim = LATENT_DIM
    native_size = 64

    def __init__(self, verdicts: Callable[[int], Verdict] | None = None) -> None:
        self.verdicts = verdicts or always(Verdict())
        self.device = torch.device("cpu")

    def sample_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        rows = []
        for seed in seeds:
            verdict = self.verdicts(int(seed))
            texture = int(seed) if verdict.texture is None else verdict.texture
            noise = np.random.default_rng(texture).standard_normal(LATENT_DIM - 3)
            rows.append([verdict.age, verdict.p_female, verdict.brightness, *noise])
        return torch.tensor(np.array(rows, dtype=np.float32).reshape(-1, LATENT_DIM))

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        images = []
        for row in latents.numpy():
            key = np.frombuffer(row[3:].tobytes(), dtype=np.uint32)
            coarse = np.random.default_rng(key).uniform(40, 215, size=(8, 8, 3))
            image = np.kron(coarse, np.ones((8, 8, 1))) * float(row[2])
            image[0, 0] = (np.clip(row[0], 0, 255), row[1] * 255, 0)
            images.append(image)
        return torch.tensor(np.array(images, dtype=np.float32).reshape(-1, 64, 64, 3))

    def generate(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        with torch.inference_mode():
            return self.render(latents).round().clamp(0, 255).to(torch.uint8)


class FakeEstimator:
    """Reads the verdict back out of the first pixel; implements ``AgeGenderEstimator``.

    ``delay`` makes each call slow, ``started`` is set on the first call, so a test can
    signal a process at a known point of a batch.
    """

    name = "fakeest"
    checksum = "e" * 64
    input_size = 64

    def __init__(self, delay: float = 0.0) -> None:
        self.device = torch.device("cpu")
        self.delay = delay
        self.started = threading.Event()
        self.calls = 0

    def predict(self, images: np.ndarray) -> AgeGenderBatch:
        self.calls += 1
        self.started.set()
        if self.delay:
            time.sleep(self.delay)
        corner = images[:, 0, 0, :].astype(np.float32)
        return AgeGenderBatch(corner[:, 0], corner[:, 1] / 255.0)

    def predict_tensor(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        corner = images[:, 0, 0, :].float()
        return corner[:, 0], corner[:, 1] / 255.0


@dataclass
class FaultyStorage:
    """Wraps a Storage and fails on command: after N puts, or the first K tries per key."""

    inner: Storage
    fail_after_puts: int | None = None  # every put after this many succeeds fails
    fail_first: int = 0  # each key's first K put attempts fail (a transient fault)
    deletes_fail: bool = False
    puts: int = 0
    attempts: dict[str, int] = field(default_factory=dict)
    on_put: Callable[[int], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        with self._lock:
            self.attempts[key] = self.attempts.get(key, 0) + 1
            if self.attempts[key] <= self.fail_first:
                raise StorageError(f"injected transient failure on {key}")
            if self.fail_after_puts is not None and self.puts >= self.fail_after_puts:
                raise StorageError("injected outage: storage is down")
            self.puts += 1
            count = self.puts
        self.inner.put(key, data, content_type)
        if self.on_put is not None:
            self.on_put(count)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, key: str) -> None:
        if self.deletes_fail:
            raise StorageError("injected outage: storage is down")
        self.inner.delete(key)

    def keys(self, prefix: str = "") -> Iterator[str]:
        return self.inner.keys(prefix)

    def ping(self) -> None:
        self.inner.ping()
