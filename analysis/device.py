"""Choosing the torch device and thread count from settings."""

from __future__ import annotations

import ctypes

import torch

# mallopt parameters from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


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
    """Cap torch's intra-op threads (``None`` or 0 leaves torch's default), and keep freed
    memory for reuse (``keep_freed_memory``): every process that runs models calls this."""
    if threads:
        torch.set_num_threads(int(threads))
    keep_freed_memory()


def keep_freed_memory() -> None:
    """Stop glibc from handing large freed blocks back to the kernel.

    A 1024 px face needs ~250 MB of activations; by default glibc serves each from a
    fresh mmap and unmaps it when freed, so every batch faults its memory in again: on
    CPU that was half of the generator's time (``tests/perf/bench_photoreal.py``, 1.0 →
    1.9 faces/s at batch 8). The price is that a process keeps its peak working memory
    (about 2 GB for a batch of 8) instead of returning it between batches. Elsewhere than
    glibc (macOS, musl) this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    except (OSError, AttributeError):
        return
