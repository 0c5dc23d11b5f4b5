"""The configured generator and estimator for a ``facecat ingest`` command.

Its own module so every command module (``ingest.cli``, ``ingest.steering.commands``) can use
it without importing another command module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from flask import Flask

if TYPE_CHECKING:  # torch is imported only when a command loads the models
    from analysis.types import AgeGenderEstimator
    from ingest.generators import Generator


def load_models(
    app: Flask, device: str | None = None, batch_size: int | None = None
) -> tuple[Generator, AgeGenderEstimator]:
    """The configured generator and estimator, on one device, with verified weights."""
    from analysis.device import configure_threads
    from analysis.estimators import load_estimator
    from analysis.weights import WeightsError
    from ingest.generators import load_generator

    configure_threads(app.config["TORCH_THREADS"])
    models_dir = app.config["MODELS_DIR"]
    try:
        generator = load_generator(
            app.config["GENERATOR"],
            models_dir,
            device=device or app.config["DEVICE"],
            truncation=app.config["TRUNCATION"],
        )
        estimator = load_estimator(
            app.config["ESTIMATOR"],
            models_dir,
            device=generator.device,
            batch_size=batch_size or app.config["INGEST_BATCH_SIZE"],
        )
    except (WeightsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    return generator, estimator
