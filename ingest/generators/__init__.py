"""Face generators behind one interface, chosen by name.

Ingest, on-demand generation and the guarded latent search only use the ``Generator``
Protocol, so a new backend (a StyleGAN2 network pickle, another distilled network) is a
module in this package plus one line in ``GENERATORS``. A portrait generator also offers
``analysis_view`` (face crops and framing verdicts, see ``photoreal``); one whose style
space is steerable gets ``facecat ingest fit-directions`` and the steer strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ingest.generators.dcgan import DCGANGenerator
from ingest.generators.photoreal import PhotorealGenerator


@runtime_checkable
class Generator(Protocol):
    """Maps integer seeds to latents and latents to square RGB faces.

    ``checksum`` (SHA-256 of the weights file) is stored with every face, together with
    its seed, so an image can be traced to, and remade from, the exact weights.
    """

    name: str
    checksum: str
    latent_dim: int
    native_size: int
    device: torch.device

    def sample_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """``(N, latent_dim)`` float32 CPU latents, the same for a seed on every machine."""
        ...

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        """``(N, H, W, 3)`` float32 RGB in [0, 255] on ``device``, differentiable."""
        ...

    def generate(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 RGB on ``device``, batched, without autograd."""
        ...


# Each class is built with ``cls.from_models_dir(models_dir, device=device)``, which
# resolves and verifies its own weight files.
GENERATORS: dict[str, type] = {
    PhotorealGenerator.name: PhotorealGenerator,
    DCGANGenerator.name: DCGANGenerator,
}


def load_generator(
    name: str,
    models_dir: str | Path,
    device: str | torch.device | None = "auto",
    *,
    truncation: float | None = None,
) -> Generator:
    """Build the generator registered as ``name`` from the weights in ``models_dir``.

    ``truncation`` applies to the photoreal generator (the legacy ones have none).
    """
    try:
        cls = GENERATORS[name]
    except KeyError:
        known = ", ".join(sorted(GENERATORS))
        raise ValueError(f"unknown generator {name!r}; known generators: {known}") from None
    if truncation is not None and cls is PhotorealGenerator:
        return cls.from_models_dir(models_dir, device=device, truncation=truncation)
    return cls.from_models_dir(models_dir, device=device)
