"""``facecat ingest fit-directions``: label seeded samples and fit the style directions.

Each sample is rendered, framed (exactly one plausible face, or it is skipped) and
labelled with the estimator's augmentation-robust verdict, the same verdict the gates
use; ``ingest.steering.fit`` then fits the directions and the file records how.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np
from flask import current_app
from flask.cli import with_appcontext
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


def _directions_file(flag: str, name: str, help: str) -> Callable[[Any], Any]:
    """A directions-file option; both commands default to the shipped file."""
    return click.option(
        flag,
        name,
        type=click.Path(dir_okay=False, path_type=Path),
        default=DIRECTIONS_FILE,
        show_default=True,
        help=help,
    )


@click.command("fit-directions")
@with_appcontext
@click.option("--samples", type=click.IntRange(20), default=800, show_default=True)
@click.option("--first-seed", type=click.IntRange(0), default=500_000, show_default=True)
@click.option("--batch", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option(
    "--alpha", type=click.FloatRange(0.0), default=10.0, show_default=True, help="Ridge penalty."
)
@_directions_file("--out", "out", "Where to write the directions (the shipped file by default).")
def fit_directions_command(
    samples: int, first_seed: int, batch: int, alpha: float, out: Path
) -> None:
    """Fit the age and gender directions of the photoreal generator's style space.

    Example: ``facecat ingest fit-directions --samples 800 --first-seed 500000``.
    """
    from analysis.robust import robust_predict
    from ingest.command_models import load_models
    from ingest.steering.fit import fit_steering

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
    steering = fit_steering(
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


@click.command("calibrate-steering")
@with_appcontext
@click.option("--seeds", type=click.IntRange(4), default=40, show_default=True)
@click.option("--first-seed", type=click.IntRange(0), default=600_000, show_default=True)
@click.option("--steps", default="2,4", show_default=True, help="Step sizes (style units).")
@click.option("--batch", type=click.IntRange(1, 256), default=8, show_default=True)
@_directions_file("--file", "path", "The directions file to measure and update.")
def calibrate_steering_command(
    seeds: int, first_seed: int, steps: str, batch: int, path: Path
) -> None:
    """Measure how many years an age edit moves the estimated age per unit step.

    Each seed is rendered as it is and moved by each step, younger and older; the
    response per side is the median of (change in the robust age estimate) / step over
    the pairs whose faces both pass framing. Example:
    ``facecat ingest calibrate-steering --seeds 40 --steps 2,4``.
    """
    import torch

    from analysis.robust import robust_predict
    from ingest.command_models import load_models
    from ingest.steering import AgeResponse

    sizes = sorted({abs(float(s)) for s in steps.split(",") if s.strip()})
    if not sizes or min(sizes) <= 0:
        raise click.BadParameter("give positive step sizes, e.g. 2,4", param_hint="--steps")
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    generator, estimator = load_models(app, None, batch)
    steering = Steering.load(path, generator_checksum=generator.checksum)
    offsets = [0.0, *(-s for s in sizes), *sizes]
    younger: list[float] = []
    older: list[float] = []
    all_seeds = list(range(first_seed, first_seed + seeds))
    for start in tqdm(range(0, seeds, batch), desc="calibrate", unit="batch"):
        base = generator.sample_latents(all_seeds[start : start + batch]).numpy()
        edits = np.concatenate([base + o * steering.age.unit for o in offsets]).astype(np.float32)
        images = generator.generate(torch.from_numpy(edits), batch_size=batch).cpu().numpy()
        framed = generator.analysis_view(images)  # type: ignore[attr-defined]
        ages = np.asarray(robust_predict(estimator, framed.crops).age, np.float64)
        ok = np.array([r is None for r in framed.reasons]).reshape(len(offsets), len(base))
        ages = ages.reshape(len(offsets), len(base))
        for k, offset in enumerate(offsets[1:], start=1):
            for i in np.flatnonzero(ok[0] & ok[k]):
                # Years per unit toward the step's side: positive when the edit worked.
                (older if offset > 0 else younger).append((ages[k, i] - ages[0, i]) / offset)
    if len(younger) < 4 or len(older) < 4:
        raise click.ClickException("too few edits passed framing to measure a response")
    response = AgeResponse(
        float(np.median(younger)),
        float(np.median(older)),
        {
            "command": " ".join(["facecat", *sys.argv[1:]]),
            "seeds": [first_seed, first_seed + seeds - 1],
            "steps": sizes,
            "pairs": {"younger": len(younger), "older": len(older)},
            "quartiles": {
                "younger": np.percentile(younger, [25, 75]).round(2).tolist(),
                "older": np.percentile(older, [25, 75]).round(2).tolist(),
            },
            "code_commit": _code_commit(),
        },
    )
    if min(response.younger, response.older) <= 0:
        raise click.ClickException(f"the measured response is not positive: {response}")
    steering.with_response(response).save(path)
    click.echo(
        f"wrote {path}: {response.younger:.2f} years younger and {response.older:.2f} years "
        "older per unit step (estimated by the robust verdict)"
    )
