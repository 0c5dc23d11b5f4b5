"""Choosing the torch device and thread count from settings."""

from __future__ import annotations

import torch


def resolve_device(name: str | None = "auto") -> torch.device:
    """Turn a setting (``auto``, ``cpu``, ``cuda``, ``cuda:1``) into a device.

    ``auto`` prefers CUDA because ingest throughput on a GPU is an order of magnitude
    higher; asking for CUDA where there is none is a configuration error, not a fallback.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def configure_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads; ``None`` or 0 leaves torch's default."""
    if threads:
        torch.set_num_threads(int(threads))
