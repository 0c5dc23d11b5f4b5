"""What on-demand generation reads from configuration (``OndemandSettings``).

Apart from the engine (``ingest.ondemand.engine``) because they are a plain value read
from an app's config before any engine exists (``catalog.ingest_services`` reads them to
build one), and reading them needs none of the engine's generation or single-flight
logic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ingest.ondemand.yields import OPTIMISE, STRATEGIES
from ingest.settings import IngestSettings, from_setting, read_settings


def parse_strategies(value: str) -> tuple[str, ...]:
    """``"sample, steer"`` → ``("sample", "steer")`` (``ONDEMAND_STRATEGIES``)."""
    return tuple(s.strip() for s in str(value).split(",") if s.strip())


@dataclass(frozen=True)
class OndemandSettings:
    """What on-demand generation reads from configuration (``ONDEMAND_*`` and the gates'
    thresholds), filled by ``from_config`` from the declared settings (``ingest.settings``)."""

    budget: float = from_setting("ONDEMAND_BUDGET_SECONDS", float)
    min_success: float = from_setting("ONDEMAND_MIN_SUCCESS", float)
    batch_size: int = from_setting("ONDEMAND_BATCH_SIZE", int)
    gender_threshold: float = from_setting("GENDER_THRESHOLD", float)
    duplicate_distance: int = from_setting("DUPLICATE_DISTANCE", int)
    slow_seconds: float = from_setting("ONDEMAND_SLOW_SECONDS", float)
    strategies: tuple[str, ...] = from_setting("ONDEMAND_STRATEGIES", parse_strategies)
    optimise_steps: int = from_setting("ONDEMAND_OPTIMISE_STEPS", int)
    backfill_seconds: float = from_setting("ONDEMAND_BACKFILL_SECONDS", float)
    backfill_faces: int = from_setting("ONDEMAND_BACKFILL_FACES", int)
    # The settings of the ingest run that admits what on-demand generation makes.
    ingest: IngestSettings
    # Candidates per batch of guarded optimisation, whose batches are whole (not a setting).
    optimise_batch: int = 8

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> OndemandSettings:
        """The declared settings in an app's config; ``overrides`` that are not None win."""
        overrides.setdefault("ingest", IngestSettings.from_config(config))
        return read_settings(cls, config, **overrides)

    def batch_sizes(self) -> dict[str, int]:
        """Candidates per batch for each strategy."""
        sizes = dict.fromkeys(STRATEGIES, self.batch_size)
        sizes[OPTIMISE] = self.optimise_batch
        return sizes
