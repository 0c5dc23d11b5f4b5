"""The ingest run's settings (``IngestSettings``), and how ingest's settings objects are
filled from the declared settings.

Every setting is declared once, in ``catalog.config`` (name, default, help, check), and an
app's config holds their validated values. A field of ``IngestSettings`` or
``OndemandSettings`` that a setting feeds says which with ``from_setting(NAME)`` and has
no default of its own, so a default cannot be declared twice and drift;
``read_settings`` fills every such field from a config. Fields that are not settings
(switches for measurements, how a run is used) keep ordinary defaults.

``IngestSettings`` is here rather than beside ``run_ingest`` (``ingest.pipeline``) because
more than the pipeline builds it: the commands and on-demand generation read it from an
app's config without needing the pipeline's stages; ``OndemandSettings`` is in
``ingest.ondemand.settings``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")

_SETTING = "facecat.setting"
_CONVERT = "facecat.convert"


def from_setting(name: str, convert: Callable[[Any], Any] | None = None) -> Any:
    """A dataclass field filled from the declared setting ``name`` (``convert`` its value)."""
    return field(metadata={_SETTING: name, _CONVERT: convert})


def read_settings(cls: type[T], config: Mapping[str, Any], **overrides: Any) -> T:
    """``cls`` with every setting-fed field read from ``config``; ``overrides`` that are
    not None replace what the config says (command-line options, tests)."""
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        name = f.metadata.get(_SETTING)
        if name is None:
            continue
        convert = f.metadata[_CONVERT]
        values[f.name] = convert(config[name]) if convert else config[name]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


@dataclass(frozen=True)
class IngestSettings:
    """Everything ``run_ingest`` reads from configuration, as one immutable value.

    Built with ``IngestSettings.from_config``: each field but the last two is a declared
    setting (``from_setting``), whose default lives in ``catalog.config`` only.
    """

    batch_size: int = from_setting("INGEST_BATCH_SIZE")
    image_size: int = from_setting("IMAGE_SIZE")
    thumb_size: int = from_setting("THUMB_SIZE")
    image_format: str = from_setting("IMAGE_FORMAT")
    quality: int = from_setting("JPEG_QUALITY")
    gender_threshold: float = from_setting("GENDER_THRESHOLD")
    duplicate_distance: int = from_setting("DUPLICATE_DISTANCE")
    composition: Mapping[str, float] | None = from_setting("TARGET_COMPOSITION")
    target_size: int = from_setting("INGEST_TARGET_SIZE")
    upload_retries: int = from_setting("INGEST_UPLOAD_RETRIES")
    upload_backoff: float = from_setting("INGEST_UPLOAD_BACKOFF_SECONDS")
    upload_threads: int = from_setting("INGEST_UPLOAD_THREADS")
    # The augmentation-robust verdict gate (``ingest.robust_gates.RobustVerdictGate``): stored
    # labels are medians over augmented copies, as on-demand ones are.
    robust: bool = from_setting("INGEST_ROBUST_GATE")
    # Store batch k while batch k+1 is generated; off only to measure stages separately.
    overlap: bool = True
    # Band targets apply; on-demand admission turns them off, because a face generated
    # for a user's filter is admitted whatever the band's fill.
    curate: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **overrides: Any) -> IngestSettings:
        """The declared settings in an app's config; ``overrides`` that are not None win."""
        return read_settings(cls, config, **overrides)
