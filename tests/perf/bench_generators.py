"""Throughput of the legacy DCGAN, alone and followed by age/gender estimation.

The default photoreal generator is measured by ``bench_photoreal.py``.

Run by hand (pytest does not collect ``bench_*`` files), from the repository root::

    .venv/bin/python tests/perf/bench_generators.py
    .venv/bin/python tests/perf/bench_generators.py --device cuda --threads 0 --seconds 5

DESIGN.md quotes about 150 faces/s for generation plus estimation on 2 CPU cores; this
is how that number is checked. Peak RSS is the process high-water mark after each row,
so rows are ordered by growing batch size and read as "memory needed up to here".
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
# Run as a script from a checkout, so the packages need not be installed.
sys.path.insert(0, str(REPO_ROOT))

from analysis.device import configure_threads  # noqa: E402
from analysis.types import AgeGenderEstimator  # noqa: E402
from ingest.generators import Generator, load_generator  # noqa: E402

logger = logging.getLogger(__name__)


def _peak_rss_mib() -> float:
    """The process's resident-set high-water mark (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rate(step: Callable[[int], None], batch: int, seconds: float) -> float:
    """Faces per second of ``step(first_seed)``, after one warm-up call."""
    step(0)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or done == 0:
        step(done + batch)
        done += batch
    return done / elapsed


def _generation(generator: Generator, batch: int) -> Callable[[int], None]:
    def step(first_seed: int) -> None:
        latents = generator.sample_latents(range(first_seed, first_seed + batch))
        images = generator.generate(latents, batch_size=batch)
        if images.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def _generation_and_estimation(
    generator: Generator, estimator: AgeGenderEstimator, batch: int
) -> Callable[[int], None]:
    def step(first_seed: int) -> None:
        latents = generator.sample_latents(range(first_seed, first_seed + batch))
        estimator.predict(generator.generate(latents, batch_size=batch).cpu().numpy())

    return step


@click.command()
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="defaults to $FACECAT_MODELS_DIR, else instance/models",
)
@click.option("--device", default="cpu", show_default=True)
@click.option("--threads", default=2, show_default=True, help="torch threads; 0 = default")
@click.option("--batches", default="1,16,64,256", show_default=True)
@click.option(
    "--estimators",
    default="faceapi",
    show_default=True,
    help="comma-separated estimator names for the second table; empty to skip",
)
@click.option("--seconds", default=2.0, show_default=True, help="timed seconds per row")
def main(
    models_dir: Path | None,
    device: str,
    threads: int,
    batches: str,
    estimators: str,
    seconds: float,
) -> None:
    """Print faces/s and peak RSS for the DCGAN, then for DCGAN + each estimator."""
    logging.basicConfig(level=logging.WARNING)
    configure_threads(threads)
    if models_dir is None:
        env = os.environ.get("FACECAT_MODELS_DIR")
        models_dir = Path(env) if env else REPO_ROOT / "instance" / "models"
    sizes = [int(b) for b in batches.split(",") if b]

    generator = load_generator("dcgan", models_dir, device=device)
    click.echo(
        f"torch {torch.__version__}, device {generator.device}, "
        f"threads {torch.get_num_threads()}, {seconds:g} s per row, "
        f"load average {os.getloadavg()[0]:.2f} (other work on shared cores skews rates)"
    )
    click.echo(f"{'pipeline':<22} {'batch':>5} {'faces/s':>9} {'peak RSS MiB':>13}")
    for batch in sizes:
        rate = _rate(_generation(generator, batch), batch, seconds)
        click.echo(f"{'dcgan':<22} {batch:>5} {rate:>9.1f} {_peak_rss_mib():>13.0f}")

    names = [n for n in estimators.split(",") if n]
    if names:
        from analysis.estimators import load_estimator

        for name in names:
            estimator = load_estimator(name, models_dir, device=device)
            for batch in sizes:
                step = _generation_and_estimation(generator, estimator, batch)
                rate = _rate(step, batch, seconds)
                label = f"dcgan + {name}"
                click.echo(f"{label:<22} {batch:>5} {rate:>9.1f} {_peak_rss_mib():>13.0f}")


if __name__ == "__main__":
    main()
