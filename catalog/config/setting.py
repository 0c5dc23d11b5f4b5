"""What a setting is, and the checks that turn an environment value into a usable one.

The declarations themselves are in ``catalog.config.service_settings`` (storage, API,
limits) and ``catalog.config.generation_settings`` (models, images, ingest, on-demand);
``catalog.config`` joins them into ``SETTINGS``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A setting has a value facecat cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """One configuration key (without the ``FACECAT_`` prefix)."""

    name: str
    default: Any
    help: str
    check: Callable[[Any], Any] | None = None
    group: str = "general"

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return f"FACECAT_{self.name}"


# --- validators: each returns the normalised value or raises ValueError --------------


def optional_str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def host_list(value: Any) -> list[str] | None:
    """Host names as a list (Flask's ``TRUSTED_HOSTS``), from a list or "a, b"; None
    or empty: any host."""
    if value is None or value == "" or value == []:
        return None
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError('must be host names: "faces.example.com, www.example.com"')
    hosts = [n.strip() for n in names if n.strip()]
    if not hosts or any(any(c.isspace() or c == "/" for c in h) for h in hosts):
        raise ValueError('must be host names: "faces.example.com, www.example.com"')
    return hosts


def url_with_schemes(*schemes: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        value = optional_str(value)
        if value is None:
            return None
        scheme = urlsplit(value).scheme
        if not any(scheme == s or scheme.startswith(s + "+") for s in schemes):
            raise ValueError(f"scheme must be one of {', '.join(schemes)} (got {scheme!r})")
        return value

    return check


def int_range(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("must be an integer")
        try:
            number = int(value)
        except ValueError:
            raise ValueError("must be an integer") from None
        if number < lo or (hi is not None and number > hi):
            raise ValueError(f"must be between {lo} and {hi}" if hi else f"must be ≥ {lo}")
        return number

    return check


def float_range(lo: float, hi: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not lo <= number <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return number

    return check


def choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return check


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.lower() in ("true", "1", "yes")
    raise ValueError("must be true or false")


def limit_string(value: Any) -> str:
    """A rate-limit string such as ``5/minute;120/day`` (checked by the limits library)."""
    from limits import parse_many  # local: only needed at start-up

    if not isinstance(value, str) or not value.strip():
        raise ValueError('must be a limit string like "5/minute;120/day"')
    parse_many(value)
    return value


def device(value: Any) -> str:
    if not isinstance(value, str) or not (
        value in ("auto", "cpu", "cuda") or value.startswith("cuda:")
    ):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return value


def composition(value: Any) -> dict[str, float]:
    """Target share per ``<gender>:<band>`` cell; shares are normalised to sum to 1."""
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping) or not value:
        raise ValueError('must be a JSON object like {"female:20-39": 0.2, ...}')
    from ingest.bands import parse_cell  # local: bands imports nothing from here

    weights: dict[str, float] = {}
    for key, share in value.items():
        parse_cell(key)
        if isinstance(share, bool) or not isinstance(share, int | float) or share < 0:
            raise ValueError(f"share for {key!r} must be a number ≥ 0")
        weights[key] = float(share)
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("shares must not all be zero")
    return {key: share / total for key, share in weights.items()}


def strategies(value: Any) -> str:
    """Comma-separated on-demand strategies, each one of ``ingest.ondemand.yields``'s."""
    known = ("sample", "steer", "optimise")
    if not isinstance(value, str):
        raise ValueError("must be a comma-separated string")
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"must list some of {', '.join(known)} (got {value!r})")
    return ",".join(names)
