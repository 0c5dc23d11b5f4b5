"""Budgets for making faces: per caller for ``/api/v1/generate``, per server for fills.

``charge_generation()`` takes from the caller's Face Studio budget (settings
``RATELIMIT_GENERATION_<CLASS>``, burst;sustained): ``/api/v1/generate`` calls it right
before rendering, after validating parameters, so a 400 never costs budget.

``charge_fill()`` takes from the server's capacity for on-demand fills of unmet lookups
(``RATELIMIT_ONDEMAND_FILLS``). A face made for a lookup joins the catalog for everyone,
and the caller of a lookup is often a browser's ``<img>``, which cannot send a key: so
the fill is governed by what the server can afford, not by who asked, and when that is
spent the answer is a 503 with ``Retry-After`` (the server is busy), never a 429 telling
an ``<img>`` to get a key. Lookups keep their own per-caller limits.

Both count in the app's ``Limiter`` (``catalog.access.limits``) on a moving window, so
bursts are exact, and both fail closed: with the limit store unreachable, nothing is
generated without a budget (503).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from flask import Flask
from limits import RateLimitItem

from catalog.access.keys import Caller, current_caller
from catalog.access.limits import KEY_PREFIX, Limiter, throttled
from catalog.errors import ApiError
from catalog.services import find_service

logger = logging.getLogger(__name__)

GENERATION_SCOPE = "generation"
FILL_SCOPE = "ondemand-fills"
SERVER = "server"  # the one identity the fill capacity is counted for


def generation_hint(user_class: str) -> str:
    """Whether a key (or a higher class) would raise a spent generation budget."""
    if user_class == "anon":
        return (
            "Generating without an API key is limited per client address; a key (basic or "
            "above) raises the budget."
        )
    if user_class == "enterprise":
        return "This is the largest generation budget; wait for the time above."
    return f"This is the {user_class} class's generation budget; a higher class raises it."


def _take(
    items: list[RateLimitItem],
    identifiers: tuple[str, ...],
    refuse: Callable[[RateLimitItem, float], ApiError],
    what: str,
    cost: int = 1,
) -> None:
    """Hit ``items`` (shortest window first) for ``identifiers``; ``refuse(item, wait)``
    is raised for the first that is spent. Each hit is atomic in the storage and the call
    is admitted only if every hit succeeds, so concurrent calls never exceed a budget,
    and a refusal by the burst limit never touches the daily one. Fails closed: with the
    storage unreachable, 503 ``limits_unavailable`` instead of generating unbudgeted."""
    strategy = find_service(Limiter).generation
    try:
        for item in items:
            if not strategy.hit(item, *identifiers, cost=cost):
                reset_at, _remaining = strategy.get_window_stats(item, *identifiers)
                raise refuse(item, reset_at - time.time())
    except ApiError:
        raise
    except Exception:
        logger.exception("rate-limit storage failed while charging %s", what)
        raise ApiError(
            503,
            "limits_unavailable",
            "The rate-limit store is not reachable, so no face can be generated; "
            "try again shortly.",
            headers={"Retry-After": "10"},
        ) from None


def charge_fill(need: str = "No stored face matches these filters") -> None:
    """Take one on-demand fill from the server's capacity; 503 if it is in use.

    ``need`` opens the 503's sentence: why a face has to be made for this request.

    :raise ApiError: 503 ``fill_capacity`` with a true ``Retry-After``, or 503
        ``limits_unavailable`` when the limit store cannot be reached.
    """

    def capacity_in_use(item: RateLimitItem, wait: float) -> ApiError:
        seconds = max(1, math.ceil(wait))
        logger.info("on-demand fill capacity %s in use; retry in %d s", item, seconds)
        return ApiError(
            503,
            "fill_capacity",
            f"{need}, and this server's capacity for "
            f"making faces on demand ({item}) is in use; try again in {seconds} seconds.",
            headers={"Retry-After": str(seconds)},
            retry_after=seconds,
        )

    limits = find_service(Limiter).fill_limits
    _take(limits, (KEY_PREFIX, SERVER, FILL_SCOPE), capacity_in_use, "an on-demand fill")


def generation_limits(user_class: str, app: Flask | None = None) -> list[RateLimitItem]:
    """The burst and sustained generation limits of a user class, shortest window first."""
    return find_service(Limiter, app).generation_limits[user_class]


def charge_generation(caller: Caller | None = None, cost: int = 1) -> None:
    """Take ``cost`` generations from the caller's budget; 429 if it is spent.

    Call it right before generating (``/api/v1/generate`` does), after validating the
    request, so a 400 never costs budget.

    :raise ApiError: 429 ``throttled`` with a true ``Retry-After``, or 503 when the limit
        store cannot be reached.
    """
    caller = caller or current_caller()

    def spent(item: RateLimitItem, wait: float) -> ApiError:
        logger.info(
            "generation limit %s reached for %s (%s); retry in %.0f s",
            item,
            caller.key_id or "an anonymous address",
            caller.user_class,
            wait,
        )
        return throttled(wait, "generation", generation_hint(caller.user_class))

    identifiers = (KEY_PREFIX, caller.rate_key, GENERATION_SCOPE)
    _take(generation_limits(caller.user_class), identifiers, spent, "a generation", cost)


def generation_budget(caller: Caller | None = None) -> list[tuple[str, int]]:
    """``(limit, remaining)`` for each generation limit of the caller (for diagnostics)."""
    caller = caller or current_caller()
    strategy = find_service(Limiter).generation
    identifiers = (KEY_PREFIX, caller.rate_key, GENERATION_SCOPE)
    return [
        (str(item), strategy.get_window_stats(item, *identifiers)[1])
        for item in generation_limits(caller.user_class)
    ]
