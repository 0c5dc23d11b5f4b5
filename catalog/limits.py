"""Rate limits: per-class generation budgets, generous lookup and image limits, true 429s.

Counting is done by the ``limits`` library (the engine under Flask-Limiter; no
hand-written counters) in ``FACECAT_RATELIMIT_STORAGE_URL``: ``memory://`` for one
process, ``redis://`` so that every gunicorn worker and every replica draws from one
budget. Each hit is one atomic storage operation, so concurrent requests never exceed a
budget (``tests/perf/bench_limits.py`` checks it under load).

Why not Flask-Limiter's request hook: it resolved, filtered and exempted its limit
declarations on every request, which cost 0.33 ms on a /face/json that takes 1.5 ms in
process (measured with its Redis storage, 2026-11-21). The check here is a dictionary
lookup by blueprint and one ``hit`` per limit.

- Catalog lookups (the ``api`` blueprint) and image fetches (``images``, ``avatar``) share
  one limit per family and caller, on fixed windows: one INCR per request, and for
  generous limits the fixed window's edge effect (up to 2x across a boundary) is moot.
- Generation is charged by ``charge_generation()``, not by a route hook, because two code
  paths generate: ``/api/v1/generate`` and the on-demand fill of an unmet filter. Both
  call it right before generating, after validating parameters (a 400 never costs
  budget), and both draw from the same per-class burst;sustained budget (settings
  ``RATELIMIT_GENERATION_<CLASS>``), on a moving window so bursts are exact.

Keyed callers are counted per key, anonymous ones per client address. The address is the
socket's unless ``FACECAT_TRUSTED_PROXY_COUNT`` says how many proxies append to
``X-Forwarded-For`` (werkzeug's ``ProxyFix(x_for=N)``), so a client cannot choose its own
identity by sending the header itself.

Over a limit the answer is 429 ``{"error": "throttled", "detail": "Request was throttled.
Expected available in N seconds."}`` with ``Retry-After: N``, where N is when the window
of the breached limit really admits the next request (rounded up).

If the storage fails, lookups and image fetches fall back to per-process counters (logged
at most once a minute) rather than failing; generation fails closed with a 503.
"""

from __future__ import annotations

import logging
import math
import threading
import time

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES, FixedWindowRateLimiter, RateLimiter
from werkzeug.middleware.proxy_fix import ProxyFix

from catalog.errors import ApiError
from catalog.keys import Caller, current_caller

logger = logging.getLogger(__name__)

_EXTENSION = "facecat.limiter"
KEY_PREFIX = "facecat"
GENERATION_SCOPE = "generation"
# Blueprint families and the setting that limits each; all routes of a family share one
# counter per caller, so /face/json and /thumb/view draw from the same lookup budget.
BLUEPRINT_LIMITS = {
    "api": ("RATELIMIT_LOOKUPS", "lookups"),
    "images": ("RATELIMIT_IMAGES", "images"),
    "avatar": ("RATELIMIT_IMAGES", "images"),
}
_WARN_EVERY = 60.0


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


def _shortest_first(limit_string: str) -> list[RateLimitItem]:
    """Parsed limits, shortest window first: a burst refusal never touches the daily one."""
    return sorted(parse_many(limit_string), key=lambda item: item.get_expiry())


class Limiter:
    """One app's limits: the storage, a strategy per use, and the parsed limits.

    One per app rather than a module global, so two apps in one process (tests, the
    shared-budget check) each have their own storage. ``enabled = False`` skips the
    lookup and image checks (benchmarks use it for their baseline); generation is
    always charged.
    """

    def __init__(self, config: dict) -> None:
        self.enabled = True
        self.storage: Storage = storage_from_string(config["RATELIMIT_STORAGE_URL"])
        self.requests: RateLimiter = FixedWindowRateLimiter(self.storage)
        self.generation: RateLimiter = STRATEGIES[config["RATELIMIT_GENERATION_STRATEGY"]](
            self.storage
        )
        self.families = {
            blueprint: (_shortest_first(config[setting]), scope)
            for blueprint, (setting, scope) in BLUEPRINT_LIMITS.items()
        }
        self.generation_limits = {
            user_class: _shortest_first(config[f"RATELIMIT_GENERATION_{user_class.upper()}"])
            for user_class in ("anon", "basic", "professional", "enterprise")
        }
        self._fallback: RateLimiter = FixedWindowRateLimiter(MemoryStorage())
        self._warned_at = -math.inf
        self._warn_lock = threading.Lock()

    def _warn_storage_down(self) -> None:
        with self._warn_lock:
            now = time.monotonic()
            if now - self._warned_at < _WARN_EVERY:
                return
            self._warned_at = now
        logger.warning(
            "rate-limit storage failed; counting lookups per process for now", exc_info=True
        )

    def check_request(self) -> None:
        """``before_request``: count the request against its family's limit, or 429."""
        if not self.enabled or request.method == "OPTIONS":
            return
        family = self.families.get(request.blueprint or "")
        if family is None:
            return
        items, scope = family
        identifiers = (KEY_PREFIX, current_caller().rate_key, scope)
        try:
            self._hit_all(self.requests, items, identifiers)
        except ApiError:
            raise
        except Exception:
            self._warn_storage_down()
            self._hit_all(self._fallback, items, identifiers)

    @staticmethod
    def _hit_all(
        strategy: RateLimiter, items: list[RateLimitItem], identifiers: tuple[str, ...]
    ) -> None:
        for item in items:
            if not strategy.hit(item, *identifiers):
                reset_at, _remaining = strategy.get_window_stats(item, *identifiers)
                raise throttled(reset_at - time.time())


def get_limiter(app: Flask | None = None) -> Limiter:
    """The app's ``Limiter``."""
    return (app or current_app).extensions[_EXTENSION]


def generation_limits(user_class: str, app: Flask | None = None) -> list[RateLimitItem]:
    """The burst and sustained generation limits of a user class, shortest window first."""
    return get_limiter(app).generation_limits[user_class]


def generation_limiter(app: Flask | None = None) -> RateLimiter:
    """The strategy generation is charged through."""
    return get_limiter(app).generation


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


def init_app(app: Flask) -> None:
    """Build this app's limiter; call after ``catalog.keys.init_app`` (limits key on the
    caller it authenticates, and before_request hooks run in registration order)."""
    proxies = int(app.config["TRUSTED_PROXY_COUNT"])
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies)  # type: ignore[method-assign]
    limiter = Limiter(app.config)
    app.extensions[_EXTENSION] = limiter
    app.before_request(limiter.check_request)
