"""Generation budgets: Face Studio's per-class burst;sustained limits on making faces.

Charged by ``charge_generation()`` rather than by a route hook, because two code paths
generate: ``/api/v1/generate`` and the on-demand fill of an unmet filter. Both call it
right before generating, after validating parameters (a 400 never costs budget), and both
draw from the same budget (settings ``RATELIMIT_GENERATION_<CLASS>``), counted by the
app's ``Limiter`` (``catalog.access.limits``) on a moving window so bursts are exact.
"""

from __future__ import annotations

import logging
import time

from flask import Flask
from limits import RateLimitItem
from limits.strategies import RateLimiter

from catalog.access.keys import Caller, current_caller
from catalog.access.limits import KEY_PREFIX, Limiter, throttled
from catalog.errors import ApiError
from catalog.services import find_service

logger = logging.getLogger(__name__)

GENERATION_SCOPE = "generation"


def generation_limits(user_class: str, app: Flask | None = None) -> list[RateLimitItem]:
    """The burst and sustained generation limits of a user class, shortest window first."""
    return find_service(Limiter, app).generation_limits[user_class]


def generation_limiter(app: Flask | None = None) -> RateLimiter:
    """The strategy generation is charged through."""
    return find_service(Limiter, app).generation


def charge_generation(caller: Caller | None = None, cost: int = 1) -> None:
    """Take ``cost`` generations from the caller's budget; 429 if it is spent.

    Call it right before generating (``/api/v1/generate`` and the on-demand fill both do),
    after validating the request. Limits are hit shortest window first, each atomically in
    the storage, and the request is admitted only if every hit succeeds, so concurrent
    requests can never exceed a budget; a request refused by the burst limit never touches
    the daily one.

    Generation fails closed: if the limit storage (Redis) is unreachable this raises 503
    instead of generating without a budget.

    :raise ApiError: 429 ``throttled`` with a true ``Retry-After``, or 503.
    """
    caller = caller or current_caller()
    strategy = generation_limiter()
    identifiers = (KEY_PREFIX, caller.rate_key, GENERATION_SCOPE)
    try:
        for item in generation_limits(caller.user_class):
            if not strategy.hit(item, *identifiers, cost=cost):
                reset_at, _remaining = strategy.get_window_stats(item, *identifiers)
                wait = reset_at - time.time()
                logger.info(
                    "generation limit %s reached for %s (%s); retry in %.0f s",
                    item,
                    caller.key_id or "an anonymous address",
                    caller.user_class,
                    wait,
                )
                raise throttled(wait)
    except ApiError:
        raise
    except Exception:
        logger.exception("rate-limit storage failed while charging a generation")
        raise ApiError(
            503,
            "limits_unavailable",
            "The rate-limit store is not reachable, so no face can be generated; "
            "try again shortly.",
            headers={"Retry-After": "10"},
        ) from None


def generation_budget(caller: Caller | None = None) -> list[tuple[str, int]]:
    """``(limit, remaining)`` for each generation limit of the caller (for diagnostics)."""
    caller = caller or current_caller()
    strategy = generation_limiter()
    identifiers = (KEY_PREFIX, caller.rate_key, GENERATION_SCOPE)
    return [
        (str(item), strategy.get_window_stats(item, *identifiers)[1])
        for item in generation_limits(caller.user_class)
    ]
