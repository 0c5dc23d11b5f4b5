"""Check a trained critic (``facecat models train-critic``) before an adapter run uses it.

Two questions, answered side by side with the face-api estimator that judges the
generator (the critic never saw face-api's verdicts; this only compares them):

1. On the critic's held-out real faces (never trained on), per (gender, band) cell: does
   it know the labels (gender accuracy, age MAE, band accuracy), and how often does
   face-api's robust verdict land in the labelled band? Teenagers are the cells to read.
2. On generated faces (the committed network, held-out seeds 10000+, as users ask):
   does the critic read the requested ages the way face-api does? A critic that calls
   the generator's boys asked 16 "16" while face-api says 24 would pull an adapter
   nowhere useful.

Run by hand from the repository root (pytest does not collect this file)::

    .venv/bin/python tests/perf/check_critic.py /work/runs/critic/critic.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from analysis.device import configure_threads  # noqa: E402
from analysis.estimators import load_estimator  # noqa: E402
from analysis.robust import robust_predict  # noqa: E402
from ingest.bands import band_of  # noqa: E402
from ingest.critic import evaluate, load_critic  # noqa: E402
from ingest.generators import conditional as cond  # noqa: E402
from ingest.training import FaceDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_conditional import GENDER_THRESHOLD, models_dir_option, weights_option  # noqa: E402
from calibrate_conditional import band_match  # noqa: E402

DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "utkface-dev"
ASKED_AGES = (6.0, 13.0, 16.0, 19.0, 30.0)


@click.command()
@click.argument("critic_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=DEFAULT_DATA,
    show_default=True,
)
@weights_option
@click.option("--seeds", "n_seeds", default=48, show_default=True)
@click.option("--first-seed", default=10_000, show_default=True)
@click.option("--threads", default=2, show_default=True)
@models_dir_option
def main(
    critic_path: Path,
    data: Path,
    weights: Path,
    n_seeds: int,
    first_seed: int,
    threads: int,
    models_dir: Path,
) -> None:
    """Compare CRITIC_PATH with face-api on held-out real faces and on generated ones."""
    if first_seed < 256:
        raise click.BadParameter("seeds below 256 are the benchmark's")
    configure_threads(threads)
    critic = load_critic(critic_path)
    record = torch.load(critic_path, weights_only=False)["record"]
    estimator = load_estimator("faceapi", models_dir, device="cpu", batch_size=128)
    faces = FaceDataset(data)
    if faces.labels_sha256 != record["labels_csv_sha256"]:
        raise click.ClickException("the critic was trained on another labels.csv")
    held = np.array(record["held_out_indices"])
    report = evaluate(critic, faces, held, torch.device("cpu"))
    click.echo(f"Held-out real faces ({len(held)}, never trained on), 64 px:")
    click.echo(
        "| cell | faces | critic: gender acc. | age MAE | median age | band acc. "
        "| face-api: in band | confident gender | median age |"
    )
    click.echo("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    images = faces.images[torch.from_numpy(held)].permute(0, 2, 3, 1).numpy()
    verdict = robust_predict(estimator, images)
    female = faces.female[held].numpy().astype(bool)
    ages = faces.ages[held].numpy()
    for cell, figures in report["cells"].items():
        gender, label = cell.split(" ")
        in_cell = [band_of(a).label == label for a in ages]
        mask = (female == (gender == "female")) & np.array(in_cell)
        record = {"gender": gender, "ages": verdict.age[mask], "p_female": verdict.p_female[mask]}
        _, confident, in_band = band_match(record, label)
        click.echo(
            f"| {cell} | {figures['faces']} | {100 * figures['gender_accuracy']:.0f}% "
            f"| {figures['age_mae']:.1f} | {figures['median_age']:.1f} "
            f"| {100 * figures['band_accuracy']:.0f}% | {100 * in_band:.0f}% "
            f"| {100 * confident:.0f}% | {np.median(record['ages']):.1f} |"
        )

    generator = cond.ConditionalGenerator(weights, device="cpu")
    latents = generator.sample_latents(range(first_seed, first_seed + n_seeds))
    click.echo(
        f"\nGenerated faces ({weights.name}, seeds {first_seed}-{first_seed + n_seeds - 1}, "
        "as users ask): median age and share confidently of the asked gender"
    )
    click.echo("| asked | face-api age | face-api gender | critic age | critic gender |")
    click.echo("| --- | --- | --- | --- | --- |")
    for gender in cond.GENDERS:
        for age in ASKED_AGES:
            out = generator.generate_for(gender, age, latents)
            verdict = robust_predict(estimator, out.cpu().numpy())
            record = {"gender": gender, "ages": verdict.age, "p_female": verdict.p_female}
            _, confident, _ = band_match(record, band_of(age).label)
            x = out.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
            p_female, critic_age = critic.predict(x)
            p = p_female if gender == "female" else 1.0 - p_female
            click.echo(
                f"| {gender} {age:g} | {np.median(verdict.age):.1f} | {100 * confident:.0f}% "
                f"| {critic_age.median().item():.1f} "
                f"| {100 * (p >= GENDER_THRESHOLD).float().mean().item():.0f}% |"
            )


if __name__ == "__main__":
    main()
