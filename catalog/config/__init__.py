"""Every facecat setting, declared once (name, default, help, validator), and loading them.

Settings are read from ``FACECAT_*`` environment variables by Flask's
``from_prefixed_env`` (values are JSON-decoded, so ``5`` is an int and ``true`` a bool).
``validate_config`` runs at start-up so a typo fails at boot with the setting's name,
not on the first request (the idea of Thumbor's importer). ``deploy/.env.example`` and the
table in docs/configuration.md are checked against this list by a test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from catalog.config.facegen_settings import FACEGEN_SETTINGS
from catalog.config.generation_settings import GENERATION_SETTINGS
from catalog.config.service_settings import SERVICE_SETTINGS
from catalog.config.setting import ConfigError, Setting

# The order of the generated docs: storage, models, images, ingest, on-demand, API,
# look-alikes.
SETTINGS: tuple[Setting, ...] = (
    *(s for s in SERVICE_SETTINGS if s.group == "storage"),
    *GENERATION_SETTINGS,
    *(s for s in SERVICE_SETTINGS if s.group != "storage"),
    *FACEGEN_SETTINGS,
)

SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def defaults() -> dict[str, Any]:
    """The default value of every setting, for ``app.config.from_mapping``."""
    return {s.name: s.default for s in SETTINGS}


def validate_config(config: dict[str, Any]) -> None:
    """Normalise every declared setting in place; raise ConfigError naming the bad one."""
    for setting in SETTINGS:
        if setting.check is None:
            continue
        try:
            config[setting.name] = setting.check(config.get(setting.name, setting.default))
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"{setting.env}={config.get(setting.name)!r} is invalid: {exc}"
            ) from None


def apply_instance_defaults(config: dict[str, Any], instance_path: str) -> None:
    """Fill the defaults that live in the instance folder (database, objects, models)."""
    instance = Path(instance_path)
    if not config.get("DATABASE_URL"):
        config["DATABASE_URL"] = f"sqlite:///{instance / 'facecat.db'}"
    if not config.get("STORAGE_URL"):
        config["STORAGE_URL"] = (instance / "objects").as_uri()
    if not config.get("MODELS_DIR"):
        config["MODELS_DIR"] = str(instance / "models")


__all__ = [
    "SETTINGS",
    "SETTINGS_BY_NAME",
    "ConfigError",
    "Setting",
    "apply_instance_defaults",
    "defaults",
    "validate_config",
]
