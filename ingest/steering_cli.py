"""``facecat ingest fit-directions``: label seeded samples and fit the style directions.

Each sample is rendered, framed (exactly one plausible face, or it is skipped) and
labelled with the estimator's augmentation-robust verdict, the same verdict the gates
use; ``ingest.steering`` then fits the directions and the file records how.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
from flask import current_app
from tqdm import tqdm

from ingest.steering import DIRECTIONS_FILE, Steering


def _code_commit() -> str:
    """The commit the fit ran from (``+dirty`` with uncommitted Python), for provenance."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "*.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


@click.command("fit-directions")
@click.option("--samples", type=click.IntRange(20), default=800, show_default=True)
@click.option("--first-seed", type=click.IntRange(0), default=500_000, show_default=True)
@click.option("--batch", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option(
    "--alpha", type=click.FloatRange(0.0), default=10.0, show_default=True, help="Ridge penalty."
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DIRECTIONS_FILE,
    show_default=True,
    help="Where to write the directions (the shipped file by default).",
)
def fit_directions_command(
    samples: int, first_seed: int, batch: int, alpha: float, out: Path
) -> None:
    """Fit the age and gender directions of the photoreal generator's style space.

    Example: ``facecat ingest fit-directions --samples 800 --first-seed 500000``.
    """
    from analysis.robust import robust_predict
    from ingest.cli import load_models

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    generator, estimator = load_models(app, None, batch)
    view = getattr(generator, "analysis_view", None)
    if view is None or generator.latent_dim != 512:
        raise click.ClickException(f"generator {generator.name!r} has no style space to steer")
    started = time.perf_counter()
    styles, ages, p_female, skipped = [], [], [], 0
    seeds = list(range(first_seed, first_seed + samples))
    for start in tqdm(range(0, samples, batch), desc="label", unit="batch"):
        chunk = seeds[start : start + batch]
        latents = generator.sample_latents(chunk)
        framed = view(generator.generate(latents, batch_size=batch).cpu().numpy())
        verdict = robust_predict(estimator, framed.crops)
        for i, reason in enumerate(framed.reasons):
            if reason is not None:
                skipped += 1
                continue
            styles.append(latents[i].numpy())
            ages.append(float(verdict.age[i]))
            p_female.append(float(verdict.p_female[i]))
    provenance = {
        "command": " ".join(["facecat", *sys.argv[1:]]) if sys.argv else "fit-directions",
        "seeds": [first_seed, first_seed + samples - 1],
        "labelled": len(styles),
        "skipped_no_usable_face": skipped,
        "truncation": getattr(generator, "truncation", None),
        "estimator": f"{estimator.name} (augmentation-robust median)",
        "alpha": alpha,
        "code_commit": _code_commit(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    steering = Steering.fit(
        np.stack(styles),
        np.asarray(ages),
        np.asarray(p_female),
        generator_checksum=generator.checksum,
        provenance=provenance,
        alpha=alpha,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    steering.save(out)
    click.echo(f"wrote {out}")
    click.echo(f"  age held out: {steering.age.heldout}")
    click.echo(f"  gender held out: {steering.gender.heldout}")
