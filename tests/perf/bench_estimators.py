"""Throughput of the age/gender estimators by batch size, with peak memory.

Run by hand (pytest does not collect ``bench_*`` files), from the repository root::

    .venv/bin/python tests/perf/bench_estimators.py
    .venv/bin/python tests/perf/bench_estimators.py --estimator wrn --input-size 64
    .venv/bin/python tests/perf/bench_estimators.py --device cuda --threads 0

Inputs are random uint8 RGB images of ``--input-size`` pixels (200 = a UTKFace chip,
so the resize is included; 112 = face-api's own size, no resize; 64 = DCGAN output).
Faces/s covers ``predict`` end to end (numpy in, numpy out); faces/CPU-s divides by
the process's CPU time instead, so it is steadier under load. Peak RSS is the process
high-water mark after each row, so rows run by growing batch size and read as "memory
needed up to here". The machine is shared: numbers vary with other people's load.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
# Run as a script from a checkout, so the packages need not be installed.
sys.path.insert(0, str(REPO_ROOT))

from analysis.device import configure_threads  # noqa: E402
from analysis.estimators import ESTIMATORS, load_estimator  # noqa: E402
from analysis.types import AgeGenderEstimator  # noqa: E402

logger = logging.getLogger(__name__)


def _peak_rss_mib() -> float:
    """The process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rate(estimator: AgeGenderEstimator, images: np.ndarray, seconds: float) -> tuple[float, float]:
    """Faces per wall-clock second and per CPU second of ``predict``, after a warm-up.

    On a shared machine the wall-clock rate depends on other people's load; faces per
    CPU second (all threads together) does much less, so it is reported beside it.
    """
    estimator.predict(images)
    done, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while (elapsed := time.perf_counter() - start) < seconds or done == 0:
        estimator.predict(images)
        done += len(images)
    return done / elapsed, done / max(time.process_time() - cpu_start, 1e-9)


@click.command()
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="defaults to $FACECAT_MODELS_DIR, else instance/models",
)
@click.option(
    "--estimator",
    "estimator_name",
    type=click.Choice(sorted(ESTIMATORS)),
    default="faceapi",
    show_default=True,
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=2, show_default=True, help="torch threads; 0 = default")
@click.option("--input-size", default=200, show_default=True, help="square input side, px")
@click.option("--batch-sizes", default="1,16,64,256", show_default=True, help="comma-separated")
@click.option("--seconds", default=3.0, show_default=True, help="measuring time per row")
def main(
    models_dir: Path | None,
    estimator_name: str,
    device: str,
    threads: int,
    input_size: int,
    batch_sizes: str,
    seconds: float,
) -> None:
    """Print a Markdown table of faces/s and peak RSS per batch size."""
    logging.basicConfig(level=logging.WARNING)
    configure_threads(threads)
    models_dir = models_dir or Path(
        os.environ.get("FACECAT_MODELS_DIR", REPO_ROOT / "instance" / "models")
    )
    sizes = sorted(int(s) for s in batch_sizes.split(","))
    estimator = load_estimator(estimator_name, models_dir, device=device, batch_size=max(sizes))
    rng = np.random.default_rng(0)
    click.echo(
        f"{estimator_name} on {estimator.device}, {torch.get_num_threads()} threads, "
        f"{input_size}x{input_size} input, torch {torch.__version__}, "
        f"{os.cpu_count()} CPUs visible"
    )
    click.echo("")
    click.echo("| batch | faces/s | faces/CPU-s | peak RSS MiB |")
    click.echo("| ---: | ---: | ---: | ---: |")
    for size in sizes:
        images = rng.integers(0, 256, (size, input_size, input_size, 3), dtype=np.uint8)
        rate, cpu_rate = _rate(estimator, images, seconds)
        click.echo(f"| {size} | {rate:.0f} | {cpu_rate:.0f} | {_peak_rss_mib():.0f} |")


if __name__ == "__main__":
    main()
