"""Rate limits: per-class generation budgets, generous lookup and image limits, true 429s.

Counting is done by the ``limits`` library (the engine under Flask-Limiter; no
hand-written counters) in ``FACECAT_RATELIMIT_STORAGE_URL``: ``memory://`` for one
process, ``redis://`` so that every gunicorn worker and every replica draws from one
budget. Each hit is one atomic storage operation, so concurrent requests never exceed a
budget (``tests/perf/bench_limits.py`` checks it under load).

Why not Flask-Limiter's request hook: it resolved, filtered and exempted its limit
declarations on every request, which cost 0.33 ms on a /face/json that takes 1.5 ms in
process (measured with its Redis storage, 2026-11-21). The check here is one
``before_request`` that reads the limit the route declared (``@limited``) and one ``hit``
per limit.

- Catalog lookups (``LOOKUPS``: /face, /thumb, /api/v1/faces) and image fetches
  (``IMAGES``: /img, /avatar) share one limit per scope and caller, on fixed windows: one
  INCR per request, and for generous limits the fixed window's edge effect (up to 2x
  across a boundary) is moot.
- Generation is charged by ``catalog.access.budgets.charge_generation()``, not by a
  route hook (two code paths generate), against per-class budgets this limiter holds.

Keyed callers are counted per key, anonymous ones per client address. The address is the
socket's unless ``FACECAT_TRUSTED_PROXY_COUNT`` says how many proxies append to
``X-Forwarded-For`` (werkzeug's ``ProxyFix(x_for=N)``), so a client cannot choose its own
identity by sending the header itself.

Over a limit the answer is 429 ``{"error": "throttled", "detail": "Request was throttled.
Expected available in N seconds."}`` with ``Retry-After: N``, where N is when the window
of the breached limit really admits the next request (rounded up).

If the storage fails, lookups and image fetches fall back to per-process counters (logged
at most once a minute) rather than failing; generation fails closed with a 503.

Cost: the one Redis round trip per request is what the limiter costs, so its transport is
tuned (``catalog.access.limit_storage``): each thread counts over its own connection, and a
lookup's or image fetch's hit is sent before the view runs and its reply read only before
the view does anything that matters (``settle_request``: before counting a serving,
before on-demand generation, and at the latest before the response leaves). A request
whose reply says "over the limit" gets the 429 instead of what the view made, and changes
nothing. Once a caller is over a fixed-window limit, it stays over until that window
ends, so each process remembers the refusal and answers the caller's next requests in
that window with a 429 at once, without Redis and without running the view. The
counting, the scripts and the keys remain the ``limits`` library's;
``tests/perf/bench_limits.py`` measures the overhead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from flask import Flask, Response, current_app, g, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, Storage
from limits.strategies import STRATEGIES, FixedWindowRateLimiter, RateLimiter
from redis.exceptions import NoScriptError
from werkzeug.middleware.proxy_fix import ProxyFix

from catalog.access.keys import ANONYMOUS, current_caller
from catalog.access.limit_storage import PendingReply, ThreadConnectionRedisStorage, open_storage
from catalog.errors import ApiError, error_response
from catalog.services import install_service

logger = logging.getLogger(__name__)

KEY_PREFIX = "facecat"
_WARN_EVERY = 60.0
_PENDING = "facecat_pending_hits"  # on flask.g: this request's sent, unread hits
_REMEMBERED_REFUSALS = 10_000  # past this, expired refusals are forgotten


def throttled(retry_after: float, budget: str, hint: str) -> ApiError:
    """The 429 for a limit that admits the next request in ``retry_after`` seconds.

    ``detail`` is Face Studio's sentence, word for word (clients parse it); ``budget``
    names the limit that was hit and ``hint`` says whether a key would raise it.
    """
    seconds = max(1, math.ceil(retry_after))
    return ApiError(
        429,
        "throttled",
        f"Request was throttled. Expected available in {seconds} seconds.",
        headers={"Retry-After": str(seconds)},
        retry_after=seconds,
        budget=budget,
        hint=hint,
    )


def request_hint(scope: str) -> str:
    """What a caller over a lookup or image limit can do about it."""
    kind = "image fetches" if scope.startswith("images") else "catalog lookups"
    return (
        f"The limit on {kind} is the same for every caller, counted per API key or, "
        "without one, per client address: a key gives you a count of your own, not a "
        "larger one. Wait for the time above."
    )


class RouteLimit(NamedTuple):
    """A request limit a route declares with ``@limited``: the setting that holds the limit
    string, and the scope whose one counter per caller every route declaring it shares (so
    /face/json and /thumb/view draw from the same lookup budget)."""

    setting: str
    scope: str


LOOKUPS = RouteLimit("RATELIMIT_LOOKUPS", "lookups")
IMAGES = RouteLimit("RATELIMIT_IMAGES", "images")

V = TypeVar("V", bound=Callable[..., Any])


def limited(limit: RouteLimit) -> Callable[[V], V]:
    """Declare, where the route is declared, that its requests count against ``limit``.

    Put it under the route decorator; the limiter checks the limit before the view runs
    (routes without one pay a dictionary lookup).
    """

    def declare(view: V) -> V:
        view.rate_limit = limit  # type: ignore[attr-defined]
        return view

    return declare


def _route_limit() -> RouteLimit | None:
    """The limit the current request's route declared, if any."""
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, "rate_limit", None)


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
        self.storage: Storage = open_storage(
            config["RATELIMIT_STORAGE_URL"], timeout=config["RATELIMIT_STORAGE_TIMEOUT"]
        )
        self.requests: RateLimiter = FixedWindowRateLimiter(self.storage)
        self.generation: RateLimiter = STRATEGIES[config["RATELIMIT_GENERATION_STRATEGY"]](
            self.storage
        )
        self._config = config
        self._route_items: dict[RouteLimit, list[RateLimitItem]] = {}
        # On-demand fills of unmet lookups: one capacity for the whole server.
        self.fill_limits = _shortest_first(config["RATELIMIT_ONDEMAND_FILLS"])
        self.generation_limits = {
            user_class: _shortest_first(config[f"RATELIMIT_GENERATION_{user_class.upper()}"])
            for user_class in ("anon", "basic", "professional", "enterprise")
        }
        self._fallback: RateLimiter = FixedWindowRateLimiter(MemoryStorage())
        # Only ThreadConnectionRedisStorage can send a hit and read its count later.
        self._deferrable = isinstance(self.storage, ThreadConnectionRedisStorage)
        # Limit key -> when its breached window ends (fixed-window request limits only).
        self._refused: dict[str, float] = {}
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

    def items(self, limit: RouteLimit) -> list[RateLimitItem]:
        """The parsed limits of a route limit's setting, shortest window first."""
        items = self._route_items.get(limit)
        if items is None:
            items = self._route_items[limit] = _shortest_first(self._config[limit.setting])
        return items

    def check_request(self) -> None:
        """App-wide ``before_request``, after authentication: count a request to a limited
        route against its limit (or send the count, see ``settle_request``), or 429."""
        limit = _route_limit() if self.enabled else None
        if limit is None or request.environ.get("REQUEST_METHOD") == "OPTIONS":
            return
        items = self.items(limit)
        identifiers = (KEY_PREFIX, current_caller().rate_key, limit.scope)
        self._refuse_if_remembered(items, identifiers)
        if self._deferrable and len(items) == 1 and self._send(items[0], identifiers):
            return
        self._hit_now(items, identifiers)

    def _bad_key_limit(self) -> tuple[list[RateLimitItem], tuple[str, ...]] | None:
        """The limit and identifiers that keyed requests rejected with 401 count against:
        the route's limit, per client address, in a scope of their own (so an address's
        anonymous lookups and its bad keys do not share one budget)."""
        limit = _route_limit()
        if limit is None or "HTTP_AUTHORIZATION" not in request.environ:
            return None
        return self.items(limit), (KEY_PREFIX, ANONYMOUS.rate_key, f"{limit.scope}-bad-keys")

    def refuse_key_guessers(self) -> None:
        """App-wide ``before_request``, ahead of authentication: 429 for a keyed request
        from an address whose rejected keys used up its limit in this window, before its
        key is looked up in the database. (A valid key from that address waits too, as
        an anonymous request from it would.)"""
        limit = self._bad_key_limit() if self.enabled and self._refused else None
        if limit is not None:
            self._refuse_if_remembered(*limit)

    def count_rejected_key(self, response: Response) -> Response:
        """App-wide ``after_request``: a keyed request answered 401 counts against its
        address's bad-key limit; once it is spent, ``refuse_key_guessers`` answers."""
        if response.status_code == 401 and self.enabled:
            limit = self._bad_key_limit()
            if limit is not None:
                # A breach is remembered: the next one is refused before the database.
                with contextlib.suppress(ApiError):
                    self._hit_now(*limit)
        return response

    def _hit_now(self, items: list[RateLimitItem], identifiers: tuple[str, ...]) -> None:
        """Count synchronously in the storage, or per process while the storage fails."""
        try:
            self._hit_all(self.requests, items, identifiers)
        except ApiError:
            raise
        except Exception:
            self._warn_storage_down()
            self._hit_all(self._fallback, items, identifiers)

    def _send(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> bool:
        """Send the hit, to be read by ``settle_request``; False if it could not be sent
        (the synchronous path then meets the same failure and handles it)."""
        try:
            reply = self.storage.send_incr(  # type: ignore[attr-defined]
                *_key_and_expiry(item, identifiers)
            )
        except Exception:
            return False
        g.setdefault(_PENDING, []).append(_PendingHit(self, item, identifiers, reply))
        return True

    def settle(self, hit: _PendingHit) -> None:
        """Read a sent hit's count: 429 if it went over the limit.

        If the script was not loaded (Redis restarted or flushed), it never ran: the
        library's own ``hit`` loads and runs it. If the reply is lost, the library's hit
        is tried too (at worst counting one hit twice), then the per-process fallback.
        """
        try:
            count = int(hit.reply.result())
        except NoScriptError:
            count = None
        except Exception:
            count = None
            logger.info("a deferred rate-limit reply was lost; counting again", exc_info=True)
        if count is None:
            self._hit_now([hit.item], hit.identifiers)
            return
        if count > hit.item.amount:
            self._refuse(self.requests, hit.item, hit.identifiers)

    def _refuse(
        self, strategy: RateLimiter, item: RateLimitItem, identifiers: tuple[str, ...]
    ) -> None:
        """Raise the 429 for a breached ``item``, remembering until when it is breached."""
        reset_at, _remaining = strategy.get_window_stats(item, *identifiers)
        if strategy is self.requests:
            if len(self._refused) >= _REMEMBERED_REFUSALS:
                now = time.time()
                # list() copies in one step under the GIL; iterating the live dict could
                # meet another thread's insert.
                self._refused = {k: t for k, t in list(self._refused.items()) if t > now}
            self._refused[_key_and_expiry(item, identifiers)[0]] = reset_at
        raise throttled(reset_at - time.time(), identifiers[-1], request_hint(identifiers[-1]))

    def _refuse_if_remembered(
        self, items: list[RateLimitItem], identifiers: tuple[str, ...]
    ) -> None:
        """429 at once while a fixed window this caller breached is still running: its
        count only grows until the window ends, so asking Redis again cannot admit."""
        if not self._refused:
            return
        for item in items:
            reset_at = self._refused.get(_key_and_expiry(item, identifiers)[0])
            if reset_at is not None and reset_at > time.time():
                scope = identifiers[-1]
                raise throttled(reset_at - time.time(), scope, request_hint(scope))

    def _hit_all(
        self, strategy: RateLimiter, items: list[RateLimitItem], identifiers: tuple[str, ...]
    ) -> None:
        for item in items:
            if not strategy.hit(item, *identifiers):
                self._refuse(strategy, item, identifiers)


class _PendingHit(NamedTuple):
    """A request's hit that was sent to the storage and whose count is not read yet."""

    limiter: Limiter
    item: RateLimitItem
    identifiers: tuple[str, ...]
    reply: PendingReply


@functools.lru_cache(maxsize=4096)
def _key_and_expiry(item: RateLimitItem, identifiers: tuple[str, ...]) -> tuple[str, int]:
    """The limit's storage key for these identifiers and its window in seconds; a
    caller's requests repeat them, and building the key is most of the hit's Python."""
    return item.key_for(*identifiers), item.get_expiry()


def settle_request() -> None:
    """Read the current request's sent hits, if any: raise the 429 if one went over.

    Call it before a limited view does anything that must not happen for a refused
    request (counting a serving, generating); ``init_app`` also calls it after every
    limited view, so a refused request never gets the view's response. Cheap and
    idempotent: the first call reads, later ones find nothing.
    """
    hits = g.pop(_PENDING, None)
    if hits:
        for hit in hits:
            hit.limiter.settle(hit)


def _settle_before_response(response: Response) -> Response:
    """App-wide ``after_request``: the 429 replaces a refused request's response."""
    try:
        settle_request()
    except ApiError as error:
        return error_response(error)
    return response


def init_app(app: Flask) -> None:
    """Build this app's limiter and hook it to every request; routes declare their limits
    with ``@limited``. ``keys.init_app`` registered the caller's authentication before, so
    limits key on an authenticated caller."""
    proxies = int(app.config["TRUSTED_PROXY_COUNT"])
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies)  # type: ignore[method-assign]
    limiter = Limiter(app.config)
    install_service(app, Limiter, limiter)
    app.before_request(limiter.check_request)
    app.after_request(_settle_before_response)
    # Before authentication (registered earlier, by catalog.access.keys): an address that keeps
    # sending keys that turn out bad is refused before its next key costs a query.
    app.before_request_funcs.setdefault(None, []).insert(0, limiter.refuse_key_guessers)
    app.after_request(limiter.count_rejected_key)
