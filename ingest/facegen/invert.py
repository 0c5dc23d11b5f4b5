"""Inverting an aligned photo into the photoreal generator's per-layer style space (W+).

Why W+ and not one style: a real face is rarely exactly on the generator's manifold, and
one 512-d style per layer reconstructs far closer (Abdal et al., Image2StyleGAN). Why so
few iterations: on a 2-core CPU one forward and backward pass through the 1024 px
network costs 0.5 s when idle and 1.5-4.7 s when the cores are shared, so a job gets
tens of Adam steps, not the thousand a GPU inversion takes. To make them count:

- the start is the encoder's style for the photo (``ingest.facegen.encoder``: a ridge
  regression from face-api's descriptor and the estimator's age and gender to a style,
  fitted on this generator's own faces), moved to the photo's gender when it reads
  otherwise; without an encoder, the best of a few fixed candidate styles;
- the first ``W_SHARE`` of the iterations move one style shared by every layer (W: the
  face stays a face of the generator's while it moves far), the rest each layer's (W+);
- the pixel loss is compared at ``LOSS_SIZE`` (256 px, area-pooled) plus a 64 px term for
  the overall shape, only where the frame shows the photo (``align_face``'s mask);
- an identity term, face-api's descriptor distance between the aligned photo's face crop
  and the rendered one (``analysis.recognition`` is differentiable), pulls toward the
  person rather than just the colours;
- an optional ``keep`` penalty on the mean style (lookalikes passes a hinge on the fitted
  gender score, so the optimisation does not drift to the other gender);
- a small regulariser keeps the layers near their common mean and that mean near the
  generator's distribution (far-off W+ codes render well but edit and mix badly).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from analysis.recognition import descriptor_distance
from ingest.facegen.align import face_crop_box

LOSS_SIZE = 256
CANDIDATES = 8  # only without an encoder start
CANDIDATE_SEED = 24  # fixed: the same photo inverts the same way whatever the job's seed
LEARNING_RATE = 0.04  # in units of the styles' per-dimension spread
W_SHARE = 0.4  # the first 40% of the iterations optimise one style for all layers
PIXEL_WEIGHT, COARSE_WEIGHT, IDENTITY_WEIGHT = 1.0, 1.0, 0.6
LAYER_WEIGHT, MEAN_WEIGHT = 0.02, 0.002


def iterations_for(steps: int) -> int:
    """Adam iterations for ModelsLab's ``num_inference_steps`` (21, 31, 41 → 12, 18, 24).

    ``(steps - 1) · 0.6``: 21 steps, the default, is a whole job of about 8 s on two idle
    CPU cores (45-55 s when they are shared); each further 10 steps adds 6 iterations
    (see docs/models.md).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return max(1, round((steps - 1) * 0.6))


class Inverter:
    """Fits W+ to one aligned photo with one generator and one descriptor network."""

    def __init__(self, generator, descriptor, candidates: int = CANDIDATES) -> None:  # type: ignore[no-untyped-def]
        self.generator = generator
        self.descriptor = descriptor
        self.size = min(LOSS_SIZE, generator.native_size)
        self.layers = generator.synthesis.num_styles
        z = np.random.default_rng(CANDIDATE_SEED).standard_normal((256, 512))
        styles = generator.styles(torch.from_numpy(z.astype(np.float32)))
        self.spread = styles.std(0, keepdim=True).to(generator.device)
        self.candidates = torch.cat([generator.style_mean.cpu(), styles[: max(0, candidates - 1)]])

    def to_loss_size(self, images: torch.Tensor) -> torch.Tensor:
        """Generator output (N, 3, S, S) in -1..1 → (N, 3, size, size), area-pooled."""
        factor = images.shape[-1] // self.size
        return F.avg_pool2d(images, factor) if factor > 1 else images

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """Descriptors of the face crop of (N, 3, size, size) frames in -1..1."""
        x0, y0, x1, y1 = face_crop_box(self.size)
        return self.descriptor.embed(frames[:, :, y0:y1, x0:x1] * 127.5 + 127.5)

    def losses(
        self, frames: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, wanted: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame (pixel loss, descriptor distance) against the target frame."""
        weight = mask.sum()
        pixel = ((frames - target).square() * mask).sum((1, 2, 3)) / (3 * weight)
        coarse_mask = F.avg_pool2d(mask, 4)
        coarse = ((F.avg_pool2d(frames, 4) - F.avg_pool2d(target, 4)).square() * coarse_mask).sum(
            (1, 2, 3)
        ) / (3 * coarse_mask.sum())
        identity = descriptor_distance(self.embed(frames), wanted)
        return PIXEL_WEIGHT * pixel + COARSE_WEIGHT * coarse, identity

    def best_candidate(
        self, target: torch.Tensor, weights: torch.Tensor, wanted: torch.Tensor
    ) -> torch.Tensor:
        """The fixed candidate style (512,) whose render is closest (one render each)."""
        device = self.generator.device
        scores = []
        with torch.no_grad():
            for style in self.candidates:
                rendered = self.to_loss_size(self.generator.synthesis(style[None].to(device)))
                pixel, identity = self.losses(rendered, target, weights, wanted)
                scores.append(float(pixel + IDENTITY_WEIGHT * identity))
        return self.candidates[int(np.argmin(scores))]

    def invert(
        self,
        frame: np.ndarray,
        mask: np.ndarray,
        iterations: int,
        progress: Callable[[float], None] | None = None,
        start: torch.Tensor | None = None,
        keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """W+ ``(1, layers, 512)`` on the CPU whose render matches ``frame``.

        ``frame`` is the aligned photo at ``self.size`` px (uint8), ``mask`` where it
        shows the photo; ``start`` the style (512,) to start from (else the best
        candidate); ``keep`` a penalty on the mean style (1, 512); ``progress`` gets the
        fraction of iterations done.
        """
        device = self.generator.device
        target = torch.from_numpy(frame).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1
        weights = torch.from_numpy(mask).to(device)[None, None]
        with torch.no_grad():
            wanted = self.embed(target)
        if start is None:
            start = self.best_candidate(target, weights, wanted)
        base = start.reshape(1, 1, -1).to(device).expand(1, self.layers, -1).clone()
        shared = torch.zeros(1, 1, base.shape[-1], device=device, requires_grad=True)
        per_layer = torch.zeros_like(base, requires_grad=True)
        optimiser = torch.optim.Adam([shared, per_layer], lr=LEARNING_RATE)
        mean = self.generator.style_mean.to(device)
        w_iterations = round(iterations * W_SHARE) if iterations > 2 else 0
        for i in range(iterations):
            for group in optimiser.param_groups:  # cosine decay: settle at the end
                group["lr"] = LEARNING_RATE * 0.5 * (1 + np.cos(np.pi * i / iterations))
            styles = base + (shared + per_layer) * self.spread
            rendered = self.to_loss_size(self.generator.synthesis(styles))
            pixel, identity = self.losses(rendered, target, weights, wanted)
            centre = styles.mean(1, keepdim=True)
            regular = LAYER_WEIGHT * ((styles - centre) / self.spread).square().mean() + (
                MEAN_WEIGHT * ((centre[:, 0] - mean) / self.spread[0]).square().mean()
            )
            loss = (pixel + IDENTITY_WEIGHT * identity).sum() + regular
            if keep is not None:
                loss = loss + keep(centre[:, 0]).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if i < w_iterations:
                per_layer.grad = None  # W phase: Adam skips the per-layer offsets
            optimiser.step()
            if progress is not None:
                progress((i + 1) / iterations)
        return (base + (shared + per_layer) * self.spread).detach().cpu()
