"""A ``SeededStudio`` on a randomly initialised conditional network and a fake estimator.

It runs the real ``ingest.seeded`` and ``ConditionalGenerator`` code (a real weights file,
verified by its sha256) without trained weights, so tests of ``/api/v1/generate`` and the
schemathesis run do not depend on the weights being present, nor spend seconds per face.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ingest.generators import conditional as cond
from ingest.seeded import SeededStudio, StudioModels
from tests.ingest.fakes import FakeEstimator


def random_weights(folder: Path) -> tuple[Path, str]:
    """Save a seeded random conditional network under ``folder``; return (path, sha256)."""
    torch.manual_seed(0)
    network = cond.ConditionalDCGAN()
    for module in network.modules():  # non-zero condition paths, so conditions matter
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=0.05)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "conditional.pt"
    torch.save(network.state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def random_studio(weights: tuple[Path, str], loads: list[int] | None = None) -> SeededStudio:
    """A studio loading ``weights`` (counting loads in ``loads`` when given)."""

    def loader() -> StudioModels:
        if loads is not None:
            loads.append(1)
        path, sha = weights
        generator = cond.ConditionalGenerator(path, device="cpu", expected_sha256=sha)
        return StudioModels(generator, FakeEstimator())

    return SeededStudio(loader)
