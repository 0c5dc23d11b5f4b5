"""Turning a differentiable ``render`` into batched uint8 images, for every generator."""

from __future__ import annotations

from collections.abc import Callable

import torch


def generate_uint8(
    render: Callable[[torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    *,
    batch_size: int,
    native_size: int,
    device: torch.device,
) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 RGB from float ``render`` output, ``batch_size`` at a time.

    Batching keeps peak memory bounded for large requests; rounding (not truncation)
    keeps the uint8 image as close as possible to what the estimator saw in float.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    with torch.inference_mode():
        chunks = [
            render(latents[start : start + batch_size]).round().clamp(0, 255).to(torch.uint8)
            for start in range(0, latents.shape[0], batch_size)
        ]
    if not chunks:
        return torch.empty((0, native_size, native_size, 3), dtype=torch.uint8, device=device)
    return torch.cat(chunks)
