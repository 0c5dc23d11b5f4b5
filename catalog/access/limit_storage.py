"""The Redis transport under the rate limits: a connection per thread, replies read late.

Counting stays the ``limits`` library's (its ``RedisStorage``: scripts, keys, options);
this module only changes how its EVALSHA travels, because that one round trip per request
is what the limiter costs (``tests/perf/bench_limits.py``).

- **A connection per thread.** In a threaded gunicorn worker redis-py's pooled path cost
  83-98 us of worker CPU per call under load (2 gthread workers x 4 threads on 2 shared
  cores), against 55-63 us over a connection the thread keeps and 30-44 us for a
  hand-written socket round trip (thread CPU time around the call, 2026-11-21). The pooled
  path adds the pool lock and bookkeeping, a non-blocking ``recv`` probe of each borrowed
  connection (three more system calls, one of them a GIL hand-off), the retry wrapper and
  metrics hooks. A connection per thread needs none of that; it is still redis-py's
  ``Connection``, so packing, parsing, timeouts and errors are redis-py's. Each thread
  that counts holds one connection (workers x threads in all), outside the pool's
  ``max_connections``.
- **Send now, read later** (``send_evalsha``). A lookup's hit is sent before the view
  runs and its reply read just before the view does anything that matters
  (``catalog.access.limits.settle_request``), so Redis runs the script while the request does
  its own work and the reply is usually already in the socket: the thread neither waits
  nor sleeps for it. One reply at most is outstanding per connection, and any later
  command on the connection reads it first, so a reply can never be paired with the
  wrong command.

Failures: a reply error (``NoScriptError`` among them) leaves the connection usable. Any
other error drops it. If a connection that had answered before fails to connect or
breaks while sending (Redis restarted, an idle socket closed), the command is sent once
more on a new one, as redis-py's own retry does; a command that ran but whose reply was
lost may so count one hit twice: a budget can then be under-used by one, never exceeded.
Timeouts and failures of a new connection are raised.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import redis
from limits.storage import RedisStorage, Storage, storage_from_string

# Bumped in every forked child, so a thread there never uses a socket its parent holds;
# cheaper than an os.getpid() system call on every hit.
_process_generation = 0


def _forked() -> None:
    global _process_generation
    _process_generation += 1


os.register_at_fork(after_in_child=_forked)


class _ThreadHeld(threading.local):
    """Per thread: the connection, the process generation that made it, whether it has
    answered, and the reply it still owes."""

    generation = -1
    connection: redis.connection.AbstractConnection | None = None
    answered = False
    pending: PendingReply | None = None


class PendingReply:
    """The reply to a command already sent on a thread's connection, read when asked."""

    def __init__(self, held: _ThreadHeld, connection: redis.connection.AbstractConnection):
        self._held = held
        self._connection = connection
        self._read_yet = False
        self._value: Any = None
        self._error: Exception | None = None

    def result(self) -> Any:
        """The reply (reading it now if nobody has), or the error it came back as."""
        if not self._read_yet:
            self._read()
        if self._error is not None:
            raise self._error
        return self._value

    def _read(self) -> None:
        held = self._held
        if held.pending is self:
            held.pending = None
        self._read_yet = True
        try:
            self._value = self._connection.read_response()
            held.answered = True
        except redis.ResponseError as error:
            self._error = error  # a whole reply was read: the connection is fine
            held.answered = True
        except Exception as error:
            self._connection.disconnect()  # a half-read reply: start over
            self._error = error
        except BaseException:
            self._connection.disconnect()
            raise


class ThreadConnectionRedis(redis.Redis):
    """A ``redis.Redis`` whose EVALSHA (how every ``limits`` strategy counts) goes over a
    connection this thread keeps; every other command takes the usual pooled path."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._held = _ThreadHeld()

    def thread_connection(self) -> redis.connection.AbstractConnection:
        """This thread's connection, made on first use (and again in a forked child),
        with any reply it still owed read first."""
        held = self._held
        if held.connection is None or held.generation != _process_generation:
            pool = self.connection_pool
            # Not pool.make_connection(): that counts towards the pool's own connections.
            held.connection = pool.connection_class(**pool.connection_kwargs)
            held.generation = _process_generation
            held.answered = False
            held.pending = None  # a parent's unread reply is not this process's to read
        elif held.pending is not None:
            held.pending._read()
        return held.connection

    def send_evalsha(
        self, sha: str, numkeys: int, *keys_and_args: Any, retry: bool = True
    ) -> PendingReply:
        """Send EVALSHA on this thread's connection; the reply is read on demand.

        With ``retry``, a connection that had answered before and fails while sending is
        replaced once.
        """
        connection = self.thread_connection()
        return self.send_packed(
            connection.pack_command("EVALSHA", sha, numkeys, *keys_and_args), retry=retry
        )

    def send_packed(self, packed: list[bytes], *, retry: bool = True) -> PendingReply:
        """Send a command packed by ``Connection.pack_command`` (callers that send the
        same command often pack it once); the reply is read on demand."""
        connection = self.thread_connection()
        held = self._held
        try:
            _send_on(connection, packed)
        except redis.ConnectionError:
            if not (retry and held.answered):
                raise
            held.answered = False
            _send_on(connection, packed)  # the dropped connection reconnects
        pending = PendingReply(held, connection)
        held.pending = pending
        return pending

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:  # type: ignore[override]
        """Run a loaded script on this thread's connection and wait for its reply; sent
        once more on a new connection if one that had answered before breaks."""
        self.thread_connection()  # read any reply still owed, so ``answered`` is current
        may_retry = self._held.answered
        try:
            return self.send_evalsha(sha, numkeys, *keys_and_args, retry=False).result()
        except redis.ConnectionError:
            if not may_retry:
                raise
            self._held.answered = False
            return self.send_evalsha(sha, numkeys, *keys_and_args, retry=False).result()


def _send_on(connection: redis.connection.AbstractConnection, packed: list[bytes]) -> None:
    """Send one packed command on ``connection`` (which connects if it is not); drop it if
    only part of the command may have gone out."""
    try:
        connection.send_packed_command(packed)
    except BaseException:
        connection.disconnect()
        raise


class ThreadConnectionRedisStorage(RedisStorage):
    """``limits``' own ``RedisStorage`` (same scripts, keys and options) running its
    scripts through ``ThreadConnectionRedis``."""

    storage: ThreadConnectionRedis

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri, **options)
        # Same pool, so the URL's options (timeouts, password, db) hold for both paths.
        self.storage = ThreadConnectionRedis(connection_pool=self.storage.connection_pool)
        self.initialize_storage(uri)  # bind the scripts to the new client

    def send_incr(self, key: str, expiry: int, amount: int = 1) -> PendingReply:
        """``incr`` (what ``FixedWindowRateLimiter.hit`` runs) with its reply read late:
        the same script, key and arguments as ``RedisStorage.incr``. A reply of
        ``NoScriptError`` means the script never ran; ``incr`` loads it."""
        return self.storage.send_packed(self._packed_incr(key, expiry, amount))

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one storage per app, for its lifetime
    def _packed_incr(self, key: str, expiry: int, amount: int) -> list[bytes]:
        """The packed EVALSHA of ``incr``: a caller's lookups repeat it, so pack it once."""
        return self.storage.thread_connection().pack_command(
            "EVALSHA", self.lua_incr_expire.sha, 1, self.prefixed_key(key), expiry, amount
        )


def open_storage(url: str, timeout: float | None = None) -> Storage:
    """The ``limits`` storage for ``url``; plain ``redis://``/``rediss://`` get
    ``ThreadConnectionRedisStorage``, anything else (``memory://``, sentinel, cluster,
    valkey) the library's own.

    ``timeout`` bounds Redis connects and replies (redis-py waits for ever by default,
    so a hung server hung every limited request); options in the URL take precedence.
    """
    if url.partition("://")[0] in ("redis", "rediss"):
        if timeout is None:
            return ThreadConnectionRedisStorage(url)
        return ThreadConnectionRedisStorage(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return storage_from_string(url)
