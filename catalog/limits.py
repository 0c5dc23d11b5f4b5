"""Rate limits: per-class generation budgets, generous lookup and image limits, true 429s.

Counting is done by the ``limits`` library (the engine under Flask-Limiter; no
hand-written counters) in ``FACECAT_RATELIMIT_STORAGE_URL``: ``memory://`` for one
process, ``redis://`` so that every gunicorn worker and every replica draws from one
budget. Each hit is one atomic storage operation, so concurrent requests never exceed a
budget (``tests/perf/bench_limits.py`` checks it under load).

Why not Flask-Limiter's request hook: it resolved, filtered and exempted its limit
declarations on every request, which cost 0.33 ms on a /face/json that takes 1.5 ms in
process (measured with its Redis storage, 2026-11-21). The check here is a
``before_request`` on the limited blueprints only and one ``hit`` per limit.

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

Cost: the one Redis round trip per request is what the limiter costs, and in a threaded
gunicorn worker redis-py's pooled client made it nearly three times dearer than the bare
socket trip (see ``ThreadConnectionRedis``), so the ``limits`` scripts run over a
connection each thread keeps. The counting, the scripts and the keys remain the
``limits`` library's; ``tests/perf/bench_limits.py`` measures the overhead.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
import time
from typing import Any

import redis
from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string
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


# Bumped in every forked child, so a thread there never uses a socket its parent holds;
# cheaper than an os.getpid() system call on every hit.
_process_generation = 0


def _forked() -> None:
    global _process_generation
    _process_generation += 1


os.register_at_fork(after_in_child=_forked)


class _ThreadHeld(threading.local):
    """Per thread: the connection, the process generation that made it, whether it has
    answered."""

    generation = -1
    connection: redis.connection.AbstractConnection | None = None
    answered = False


class ThreadConnectionRedis(redis.Redis):
    """A ``redis.Redis`` whose EVALSHA (how every ``limits`` strategy counts) goes over a
    connection this thread keeps; every other command takes the usual pooled path.

    Why: each request makes one EVALSHA, and under load (2 gthread workers x 4 threads
    on 2 shared cores) redis-py's pooled path cost 83-98 us of worker CPU per call,
    against 55-63 us this way and 30-44 us for a hand-written socket round trip (thread
    CPU time around the call, 2026-11-21). The pooled path adds the pool lock and
    bookkeeping, a non-blocking ``recv`` probe of each borrowed connection (three more
    system calls, one of them a GIL hand-off), the retry wrapper and metrics hooks. A
    connection per thread needs no borrowing and no probe; it is still redis-py's
    ``Connection``, so packing, parsing, timeouts and errors are redis-py's. Each thread
    that counts holds one connection (workers x threads in all), outside the pool's
    ``max_connections``.

    Failures: a reply error (``NoScriptError`` among them, which ``Script`` answers by
    loading the script) leaves the connection usable. Any other error drops it. If a
    connection that had answered before fails to connect or breaks (Redis restarted, an
    idle socket closed), the command is sent once more on a new one, as redis-py's own
    retry does, so at worst a command that ran but whose reply was lost counts one hit
    twice: a budget can then be under-used by one, never exceeded. Timeouts and failures
    of a new connection are raised.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._held = _ThreadHeld()

    def thread_connection(self) -> redis.connection.AbstractConnection:
        """This thread's connection, made on first use (and again in a forked child)."""
        held = self._held
        if held.connection is None or held.generation != _process_generation:
            pool = self.connection_pool
            # Not pool.make_connection(): that counts towards the pool's own connections.
            held.connection = pool.connection_class(**pool.connection_kwargs)
            held.generation = _process_generation
            held.answered = False
        return held.connection

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:  # type: ignore[override]
        """Run a loaded script on this thread's connection (see the class doc)."""
        connection = self.thread_connection()
        held = self._held
        try:
            reply = _evalsha_on(connection, sha, numkeys, keys_and_args)
        except redis.ConnectionError:
            if not held.answered:
                raise
            held.answered = False
            reply = _evalsha_on(connection, sha, numkeys, keys_and_args)
        held.answered = True
        return reply


def _evalsha_on(
    connection: redis.connection.AbstractConnection,
    sha: str,
    numkeys: int,
    keys_and_args: tuple[Any, ...],
) -> Any:
    """EVALSHA on ``connection`` (which connects if it is not); drop it unless the whole
    reply was read."""
    try:
        connection.send_command("EVALSHA", sha, numkeys, *keys_and_args)
        return connection.read_response()
    except redis.ResponseError:
        raise  # a whole reply was read: the connection is fine
    except BaseException:
        connection.disconnect()  # a half-sent command or half-read reply: start over
        raise


class ThreadConnectionRedisStorage(RedisStorage):
    """``limits``' own ``RedisStorage`` (same scripts, keys and options) running its
    scripts through ``ThreadConnectionRedis``."""

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        # Same pool, so the URL's options (timeouts, password, db) hold for both paths.
        self.storage = ThreadConnectionRedis(connection_pool=self.storage.connection_pool)
        self.initialize_storage(uri)  # bind the scripts to the new client


def open_storage(url: str) -> Storage:
    """The ``limits`` storage for ``url``; plain ``redis://``/``rediss://`` get
    ``ThreadConnectionRedisStorage``, anything else (``memory://``, sentinel, cluster,
    valkey) the library's own."""
    if url.partition("://")[0] in ("redis", "rediss"):
        return ThreadConnectionRedisStorage(url)
    return storage_from_string(url)


class Limiter:
    """One app's limits: the storage, a strategy per use, and the parsed limits.

    One per app rather than a module global, so two apps in one process (tests, the
    shared-budget check) each have their own storage. ``enabled = False`` skips the
    lookup and image checks (benchmarks use it for their baseline); generation is
    always charged.
    """

    def __init__(self, config: dict) -> None:
        self.enabled = True
        self.storage: Storage = open_storage(config["RATELIMIT_STORAGE_URL"])
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

    def check_request(self, items: list[RateLimitItem], scope: str) -> None:
        """``before_request`` of a limited blueprint: count the request against its
        family's ``items``, or 429."""
        if not self.enabled or request.environ.get("REQUEST_METHOD") == "OPTIONS":
            return
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
    """Build this app's limiter and hook it to the limited blueprints only, so other
    routes pay nothing. Flask runs app-wide ``before_request`` functions (the caller's
    authentication, ``catalog.keys.init_app``) before a blueprint's, so limits key on an
    authenticated caller."""
    proxies = int(app.config["TRUSTED_PROXY_COUNT"])
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies)  # type: ignore[method-assign]
    limiter = Limiter(app.config)
    app.extensions[_EXTENSION] = limiter
    for blueprint, (items, scope) in limiter.families.items():
        hooks = app.before_request_funcs.setdefault(blueprint, [])
        hooks.append(functools.partial(limiter.check_request, items, scope))
