"""A ``SeededStudio`` on a small random MobileStyleGAN, its directions and a fake estimator.

It runs the real ``ingest.seeded``, ``PhotorealGenerator`` and ``ingest.steering`` code
on a randomly initialised network of the same architecture with three levels instead of
eight (32 px instead of 1024), saved as a real weights file, with directions fitted on
made-up labels. So tests of ``/api/v1/generate`` and the schemathesis run do not depend
on the fetched weights, nor spend a second per face.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from ingest.generators import mobilestylegan as msg
from ingest.generators.photoreal import PhotorealGenerator
from ingest.seeded import SeededStudio, StudioModels
from ingest.steering import AgeResponse, Steering
from ingest.steering.fit import fit_steering
from tests.ingest.fakes import FakeEstimator

CHANNELS = (32, 32, 16)


def random_weights(folder: Path) -> tuple[Path, str]:
    """Save a seeded random small network under ``folder``; return (path, sha256)."""
    torch.manual_seed(0)
    mapping, synthesis = msg.MappingNetwork(), msg.SynthesisNetwork(CHANNELS)
    for parameter in synthesis.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mobilestylegan-small.pt"
    torch.save({"mapping": mapping.state_dict(), "synthesis": synthesis.state_dict()}, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def small_generator(weights: tuple[Path, str]) -> PhotorealGenerator:
    """The generator of ``random_weights``, checked against its sha256."""
    path, sha = weights
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    state = torch.load(path, weights_only=True)
    mapping, synthesis = msg.MappingNetwork(), msg.SynthesisNetwork(CHANNELS)
    mapping.load_state_dict(state["mapping"])
    synthesis.load_state_dict(state["synthesis"])
    return PhotorealGenerator(mapping, synthesis, checksum=sha, device="cpu")


def made_up_steering(generator: PhotorealGenerator) -> Steering:
    """Directions fitted on labels that are linear in the style (a random projection)."""
    styles = generator.sample_latents(list(range(400))).numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    age_dir, gender_dir = rng.normal(size=(2, styles.shape[1]))
    centred = styles - styles.mean(0)
    ages = 40 + 15 * (centred @ age_dir) / (centred @ age_dir).std()
    p_female = 1 / (1 + np.exp(-3 * (centred @ gender_dir) / (centred @ gender_dir).std()))
    steering = fit_steering(
        styles,
        ages,
        p_female,
        generator_checksum=generator.checksum,
        provenance={"made_up": True},
    )
    return steering.with_response(AgeResponse(5.0, 8.5))


def random_studio(weights: tuple[Path, str], loads: list[int] | None = None) -> SeededStudio:
    """A studio loading ``weights`` (counting loads in ``loads`` when given)."""

    def loader() -> StudioModels:
        if loads is not None:
            loads.append(1)
        generator = small_generator(weights)
        return StudioModels(generator, FakeEstimator(), made_up_steering(generator))

    return SeededStudio(loader)
