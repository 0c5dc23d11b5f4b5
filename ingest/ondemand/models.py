"""The models on-demand generation runs (``ModelSet``): loading them, and which
strategies can run here judged without loading them.

Apart from the engine (``ingest.ondemand.engine``) because loading is what pulls in
torch and the weights: the engine only calls the loader it is given, the first time a
run needs the models, so a web process that never meets an unmet filter never imports
torch, and the commands load the same set without an engine.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.ondemand.yields import OPTIMISE, SAMPLE, STEER
from ingest.steering import DIRECTIONS_FILE

if TYPE_CHECKING:
    from analysis.types import AgeGenderEstimator
    from ingest.generators import Generator


@dataclass
class ModelSet:
    """The loaded models; ``steering`` is None when the generator has no fitted directions."""

    generator: Generator
    estimator: AgeGenderEstimator
    steering: Any | None = None  # ingest.steering.Steering for the photoreal generator


def load_model_set(config: Mapping[str, Any]) -> ModelSet:
    """The configured generator and estimator, and the generator's style directions."""
    from analysis.device import configure_threads
    from analysis.estimators import load_estimator
    from ingest.generators import load_generator
    from ingest.steering import load_steering

    configure_threads(config["TORCH_THREADS"])
    models_dir = config["MODELS_DIR"]
    generator = load_generator(
        config["GENERATOR"], models_dir, device=config["DEVICE"], truncation=config["TRUNCATION"]
    )
    estimator = load_estimator(
        config["ESTIMATOR"], models_dir, device=generator.device, batch_size=64
    )
    return ModelSet(generator, estimator, load_steering(generator))


def available_without_loading() -> list[str]:
    """Strategies usable here, judged from the files on disk (nothing is loaded)."""
    usable = [SAMPLE, OPTIMISE]
    if DIRECTIONS_FILE.is_file():
        usable.append(STEER)
    return usable
