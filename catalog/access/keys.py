"""API keys: ``Authorization: Token <key>``, user classes, and the functions that manage keys.

A key looks like ``fc_<key_id>_<secret>``: ``key_id`` is 12 public hex digits (what
``keys list`` shows and ``keys revoke`` takes, and how a request finds its row through a
unique index), ``secret`` is 256 random bits. Only the SHA-256 of the whole key is stored,
and the stored and computed digests are compared with ``hmac.compare_digest``.

Why SHA-256 and not bcrypt/argon2: slow hashes exist to make guessing *low-entropy*
passwords expensive. A 256-bit random secret cannot be guessed at any hash speed, so a
slow hash would add nothing but 50-300 ms of CPU to every authenticated request (on a
2-core host that is the whole request budget). GitHub and Stripe tokens make the same
choice.

Every response carries ``X-User-Class`` (anon, basic, professional, enterprise). A request
with an ``Authorization`` header that is not a valid, active key is answered 401 rather
than silently served as anon, so a client with a typo or a revoked key finds out at once.
Keys never reach the logs: only ``key_id`` is ever logged.

The ``facecat keys`` commands over the managing functions are in ``key_commands``.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from catalog.errors import ApiError
from catalog.services import find_service, install_service
from catalog.sql.db import get_connection
from catalog.sql.models import APIKey, utcnow

logger = logging.getLogger(__name__)

ANON = "anon"
KEY_CLASSES = ("basic", "professional", "enterprise")
USER_CLASSES = (ANON, *KEY_CLASSES)
MAX_ACTIVE_KEYS_PER_OWNER = 5
KEY_PREFIX = "fc_"
_KEY_RE = re.compile(r"fc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_CACHE_ENTRIES = 4096


@dataclass(frozen=True)
class Caller:
    """Who is calling: the user class and, for keyed callers, the public key id."""

    user_class: str = ANON
    key_id: str | None = None

    @property
    def rate_key(self) -> str:
        """The identity limits count against: the key, else the client address."""
        if self.key_id is not None:
            return f"key:{self.key_id}"
        return f"addr:{request.remote_addr or 'unknown'}"

    def at_least(self, user_class: str) -> bool:
        """Whether this caller's class is ``user_class`` or above."""
        return USER_CLASSES.index(self.user_class) >= USER_CLASSES.index(user_class)


ANONYMOUS = Caller()


def hash_key(key: str) -> str:
    """Hex SHA-256 of the full key: what the database stores (see the module doc for why)."""
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``: 48 public bits to look it up, 256 secret bits."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 43 characters of [A-Za-z0-9_-]
    return key_id, f"{KEY_PREFIX}{key_id}_{secret}"


def parse_key(key: str) -> str | None:
    """The key id of a well-formed key, else None."""
    match = _KEY_RE.fullmatch(key)
    return match.group(1) if match else None


# --- managing keys (used by the CLI; pure functions over a Session) ---------------------


def active_key_count(session: Session, owner: str) -> int:
    """How many unrevoked keys ``owner`` has."""
    return session.scalar(
        select(func.count()).where(APIKey.owner == owner, APIKey.revoked_at.is_(None))
    )


def normalise_owner(owner: str) -> str:
    """Owners are e-mail addresses, compared case-insensitively."""
    owner = owner.strip().lower()
    if not _EMAIL_RE.fullmatch(owner) or len(owner) > 254:
        raise ValueError(f"owner must be an e-mail address, got {owner!r}")
    return owner


def create_key(session: Session, owner: str, name: str, user_class: str) -> tuple[APIKey, str]:
    """Create a key; return the row and the plaintext key (shown once, never stored).

    :raise ValueError: bad owner, name or class, or ``owner`` already has
        ``MAX_ACTIVE_KEYS_PER_OWNER`` active keys. On PostgreSQL a transaction-scoped
        advisory lock per owner makes concurrent creations count one after the other, so
        two racing ``keys create`` cannot both make a sixth key; SQLite serialises writers.
    """
    owner = normalise_owner(owner)
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("name must be 1 to 100 characters")
    if user_class not in KEY_CLASSES:
        raise ValueError(f"class must be one of {', '.join(KEY_CLASSES)}")
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:o))"), {"o": owner})
    active = active_key_count(session, owner)
    if active >= MAX_ACTIVE_KEYS_PER_OWNER:
        raise ValueError(
            f"{owner} already has {active} active keys (at most "
            f"{MAX_ACTIVE_KEYS_PER_OWNER}); revoke one with `facecat keys revoke KEY_ID` first"
        )
    key_id, key = new_key()
    row = APIKey(
        key_id=key_id, key_hash=hash_key(key), owner=owner, name=name, user_class=user_class
    )
    session.add(row)
    session.flush()
    logger.info("created %s key %s for %s", user_class, key_id, owner)
    return row, key


def list_keys(session: Session, owner: str | None = None) -> list[APIKey]:
    """Keys (active and revoked), oldest first, optionally of one owner."""
    query = select(APIKey).order_by(APIKey.created_at, APIKey.id)
    if owner is not None:
        query = query.where(APIKey.owner == normalise_owner(owner))
    return list(session.scalars(query))


def revoke_key(session: Session, key_id: str) -> APIKey:
    """Revoke a key by its public id; revoking twice keeps the first revocation time.

    :raise LookupError: no key has that id.
    """
    row = session.scalar(select(APIKey).where(APIKey.key_id == key_id))
    if row is None:
        raise LookupError(f"no key has id {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        logger.info("revoked key %s of %s", key_id, row.owner)
    return row


# --- authenticating requests --------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    key_hash: str
    caller: Caller
    active: bool
    expires: float


class KeyCache:
    """A small per-process LRU of looked-up keys, so a keyed request skips one query.

    Entries live ``KEY_CACHE_SECONDS`` from the moment the row was read; that bounds how
    long a revocation made in another process may take to reach this one (the README
    says so, a test checks it). Unknown key ids are remembered as unknown for as long.
    What is cached is the row (hash, class, revoked or not), never a verdict on a
    presented key: every request's key is still hashed and compared with the stored hash
    in constant time.
    """

    def __init__(
        self, ttl: float, size: int = _CACHE_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._unknown: OrderedDict[str, float] = OrderedDict()  # key id -> forget at
        self._lock = threading.Lock()

    def get(self, key_id: str) -> _Entry | None:
        """The live entry for ``key_id``, or None."""
        with self._lock:
            entry = self._entries.get(key_id)
            if entry is None:
                return None
            if entry.expires <= self.clock():
                del self._entries[key_id]
                return None
            self._entries.move_to_end(key_id)
            return entry

    def put(self, key_id: str, row: Any) -> _Entry:
        """Remember ``row`` (key_hash, user_class, revoked_at) and return its entry."""
        entry = _Entry(
            row.key_hash,
            Caller(row.user_class, key_id),
            row.revoked_at is None,
            self.clock() + self.ttl,
        )
        if self.ttl > 0:
            with self._lock:
                self._entries[key_id] = entry
                self._entries.move_to_end(key_id)
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
        return entry

    def forget(self, key_id: str) -> None:
        """Drop ``key_id`` (after a revocation in this process)."""
        with self._lock:
            self._entries.pop(key_id, None)
            self._unknown.pop(key_id, None)

    def remember_unknown(self, key_id: str) -> None:
        """Remember for ``ttl`` that no key has this id, so a client repeating it costs
        no query; a key created meanwhile in another process works once it expires."""
        if self.ttl <= 0:
            return
        with self._lock:
            self._unknown[key_id] = self.clock() + self.ttl
            self._unknown.move_to_end(key_id)
            while len(self._unknown) > self.size:
                self._unknown.popitem(last=False)

    def known_unknown(self, key_id: str) -> bool:
        """Whether ``key_id`` was looked up and not found within the last ``ttl``."""
        with self._lock:
            expires = self._unknown.get(key_id)
            if expires is None:
                return False
            if expires <= self.clock():
                del self._unknown[key_id]
                return False
            return True


def _unauthorized(detail: str) -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Token realm="facecat"'},
    )


def authenticate(authorization: str | None, cache: KeyCache | None = None) -> Caller:
    """The caller for an ``Authorization`` header value (None: anon).

    ``cache`` is the app's key cache (looked up when not given).

    :raise ApiError: 401 for a header that is not ``Token <key>`` with an active key.
    """
    if authorization is None:
        return ANONYMOUS
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "token" or not key.strip():
        raise _unauthorized('Send the API key as "Authorization: Token <key>".')
    key = key.strip()
    key_id = parse_key(key)
    if key_id is None:
        raise _unauthorized("This is not a facecat API key.")
    if cache is None:
        cache = find_service(KeyCache)
    entry = cache.get(key_id)
    if entry is None and not cache.known_unknown(key_id):
        # Core on the autocommit connection: one indexed SELECT, no ORM, no transaction.
        row = (
            get_connection()
            .execute(
                select(APIKey.key_hash, APIKey.user_class, APIKey.revoked_at).where(
                    APIKey.key_id == key_id
                )
            )
            .first()
        )
        if row is None:
            cache.remember_unknown(key_id)
        else:
            entry = cache.put(key_id, row)
    if entry is None:
        # Hash anyway, so an unknown id costs the same time as a wrong secret.
        hmac.compare_digest(hash_key(key), "0" * 64)
        logger.info("rejected unknown API key id %s", key_id)
        raise _unauthorized("Unknown API key.")
    if not hmac.compare_digest(hash_key(key), entry.key_hash):
        logger.info("rejected API key id %s: wrong secret", key_id)
        raise _unauthorized("Unknown API key.")
    if not entry.active:
        logger.info("rejected revoked API key %s", key_id)
        raise _unauthorized("This API key has been revoked.")
    return entry.caller


def current_caller() -> Caller:
    """Who the current request is from (anon outside requests or before authentication)."""
    return g.get("caller", ANONYMOUS)


def require_class(user_class: str, feature: str) -> None:
    """403 unless the caller is ``user_class`` or above (Face Studio's plan gating)."""
    caller = current_caller()
    if not caller.at_least(user_class):
        raise ApiError(
            403,
            "forbidden",
            f"{feature} needs a {user_class} API key or above; this request is "
            f"{caller.user_class}.",
            user_class=caller.user_class,
            required_class=user_class,
        )


def _authenticate_request(cache: KeyCache) -> None:
    environ = request.environ  # one proxy lookup instead of three: this runs every request
    if environ.get("REQUEST_METHOD") == "OPTIONS":  # CORS preflights carry no credentials
        g.caller = ANONYMOUS
        return
    try:
        g.caller = authenticate(environ.get("HTTP_AUTHORIZATION"), cache)
    except Exception:
        # The 401 (or 500) still reports a class, and never a previous request's: g
        # outlives a request when a test pushed the app context itself.
        g.caller = ANONYMOUS
        raise


def _add_user_class(response: Response) -> Response:
    response.headers["X-User-Class"] = current_caller().user_class
    # Answers depend on the key: shared caches must not give one caller's answer to another.
    response.vary.add("Authorization")
    return response


def init_app(app: Flask) -> None:
    """Authenticate every request before anything else (rate limits key on the caller)."""
    cache = KeyCache(float(app.config["KEY_CACHE_SECONDS"]))
    install_service(app, KeyCache, cache)
    app.before_request(functools.partial(_authenticate_request, cache))
    app.after_request(_add_user_class)
