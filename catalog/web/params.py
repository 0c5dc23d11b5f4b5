"""Query-parameter parsing: every invalid value becomes a 400 that names the parameter.

DESIGN.md: parameters are optional; unknown ones (``t``, cache busters) are ignored;
anything invalid in a known one is a 400, never a 500 and never silently dropped. Parsing
is strict (ASCII digits only, lower-case genders) so one URL has one meaning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from analysis.vocabulary import GENDERS, MAX_AGE, MIN_AGE
from catalog.errors import ApiError
from catalog.sql.cells import Filters

_DIGITS = re.compile(r"[0-9]{1,9}")

# The order fakeface.rest listed them in; error details and the OpenAPI enum use it.
GENDER_CHOICES: tuple[str, ...] = tuple(sorted(GENDERS, reverse=True))


def invalid(parameter: str, detail: str) -> ApiError:
    """The 400 for one bad parameter."""
    return ApiError(400, "invalid_parameter", detail, parameter=parameter)


def parse_int(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An optional integer parameter within ``low..high``."""
    raw = args.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise invalid(name, f"{name} must be an integer from {low} to {high} (got {raw!r}).")
    return int(raw)


def parse_choice(args: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    """An optional parameter restricted to ``choices``."""
    raw = args.get(name)
    if raw is None:
        return None
    if raw not in choices:
        raise invalid(name, f"{name} must be one of {', '.join(choices)} (got {raw!r}).")
    return raw


def parse_filters(args: Mapping[str, str]) -> Filters:
    """``gender``, ``minimum_age`` and ``maximum_age`` from the query string."""
    gender = parse_choice(args, "gender", GENDER_CHOICES)
    minimum = parse_int(args, "minimum_age", MIN_AGE, MIN_AGE, MAX_AGE)
    maximum = parse_int(args, "maximum_age", MAX_AGE, MIN_AGE, MAX_AGE)
    if minimum > maximum:
        raise ApiError(
            400,
            "invalid_parameter",
            f"minimum_age ({minimum}) must not be greater than maximum_age ({maximum}).",
            parameter="minimum_age",
            parameters=["minimum_age", "maximum_age"],
        )
    return Filters(gender=gender, minimum_age=minimum, maximum_age=maximum)
