"""Rate limits: per-class generation budgets, generous lookup and image limits, true 429s.

Counting is Flask-Limiter's and the ``limits`` library's (no hand-written counters), in
``FACECAT_RATELIMIT_STORAGE_URL``: ``memory://`` for one process, ``redis://`` so that
every gunicorn worker and every replica draws from one budget.

- Catalog lookups (the ``api`` blueprint) and image fetches (``images``, ``avatar``) get a
  shared limit per blueprint family, applied by Flask-Limiter before the view runs.
- Generation is charged by ``charge_generation()``, not by a route decorator, because two
  code paths generate: ``/api/v1/generate`` and the on-demand fill of an unmet filter
  (``catalog.fallback``). Both call it right before generating, after their parameters
  are validated, so a 400 never costs budget, and both draw from the same per-class
  burst;sustained budget (settings ``RATELIMIT_GENERATION_<CLASS>``).

Keyed callers are counted per key, anonymous ones per client address. The address is the
socket's unless ``FACECAT_TRUSTED_PROXY_COUNT`` says how many proxies append to
``X-Forwarded-For`` (werkzeug's ``ProxyFix(x_for=N)``), so a client cannot choose its own
identity by sending the header itself.

Over a limit the answer is 429 ``{"error": "throttled", "detail": "Request was throttled.
Expected available in N seconds."}`` with ``Retry-After: N``, where N is when the window
of the breached limit really admits the next request (rounded up).
"""

from __future__ import annotations

import logging
import math
import time

from flask import Flask, Response, current_app
from flask_limiter import Limiter, RateLimitExceeded
from limits import RateLimitItem, parse_many
from limits.strategies import STRATEGIES, RateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix

from catalog.errors import ApiError, error_response
from catalog.keys import Caller, current_caller

logger = logging.getLogger(__name__)

_EXTENSION = "facecat.limiter"
_GENERATION_EXTENSION = "facecat.generation_limiter"
KEY_PREFIX = "facecat"
GENERATION_SCOPE = "generation"
# Blueprint families and the setting that limits each; all routes of a family share one
# counter per caller, so /face/json and /thumb/view draw from the same lookup budget.
BLUEPRINT_LIMITS = {
    "api": ("RATELIMIT_LOOKUPS", "lookups"),
    "images": ("RATELIMIT_IMAGES", "images"),
    "avatar": ("RATELIMIT_IMAGES", "images"),
}


def rate_key() -> str:
    """What a request is counted against: its key, else its client address."""
    return current_caller().rate_key


def throttled(retry_after: float) -> ApiError:
    """The 429 for a limit that admits the next request in ``retry_after`` seconds."""
    seconds = max(1, math.ceil(retry_after))
    return ApiError(
        429,
        "throttled",
        f"Request was throttled. Expected available in {seconds} seconds.",
        headers={"Retry-After": str(seconds)},
        retry_after=seconds,
    )


def get_limiter(app: Flask | None = None) -> Limiter:
    """The app's Flask-Limiter extension."""
    return (app or current_app).extensions[_EXTENSION]


def generation_limits(user_class: str, app: Flask | None = None) -> list[RateLimitItem]:
    """The burst and sustained generation limits of a user class, shortest window first."""
    config = (app or current_app).config
    items = parse_many(config[f"RATELIMIT_GENERATION_{user_class.upper()}"])
    return sorted(items, key=lambda item: item.get_expiry())


def generation_limiter(app: Flask | None = None) -> RateLimiter:
    """The ``limits`` strategy generation is charged through (on the limiter's storage).

    Its own strategy object rather than ``Limiter.limiter``: that one silently switches to
    per-process memory when Redis fails, and generation must fail closed instead.
    """
    return (app or current_app).extensions[_GENERATION_EXTENSION]


def _retry_after(strategy: RateLimiter, item: RateLimitItem, *identifiers: str) -> float:
    """Seconds until ``item`` admits one more hit for ``identifiers``."""
    reset_at, _remaining = strategy.get_window_stats(item, *identifiers)
    return reset_at - time.time()


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
                wait = _retry_after(strategy, item, *identifiers)
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


def _handle_exceeded(exc: RateLimitExceeded) -> Response:
    """Flask-Limiter's breach as facecat's JSON 429 with a true Retry-After."""
    limiter = get_limiter()
    current = limiter.current_limit
    # Flask-Limiter records the breached limit; the window length is only a fallback.
    wait = current.window[0] - time.time() if current is not None else exc.limit.limit.get_expiry()
    return error_response(throttled(wait))


def init_app(app: Flask) -> None:
    """Build this app's limiter (after ``catalog.keys.init_app``: limits key on the caller).

    One Limiter per app rather than a module global, so two apps in one process (tests,
    the shared-budget check) each get their own storage and limits.
    """
    proxies = int(app.config["TRUSTED_PROXY_COUNT"])
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies)  # type: ignore[method-assign]
    limiter = Limiter(
        key_func=rate_key,
        storage_uri=app.config["RATELIMIT_STORAGE_URL"],
        # Lookups and images: one INCR per request; their limits are generous, so the
        # fixed window's edge effect (up to 2x across a boundary) does not matter.
        strategy="fixed-window",
        key_prefix=KEY_PREFIX,
        headers_enabled=False,
        # Lookups keep working on per-process counters if Redis goes away (logged);
        # generation does not, see charge_generation.
        in_memory_fallback_enabled=True,
    )
    for blueprint, (setting, scope) in BLUEPRINT_LIMITS.items():
        limiter.limit_manager.add_blueprint_limit(
            blueprint, limiter.shared_limit(app.config[setting], scope=scope)
        )
    limiter.init_app(app)
    app.extensions[_EXTENSION] = limiter
    app.extensions[_GENERATION_EXTENSION] = STRATEGIES[app.config["RATELIMIT_GENERATION_STRATEGY"]](
        limiter.storage
    )
    app.register_error_handler(RateLimitExceeded, _handle_exceeded)
