"""A bound on how long facecat waits for PostgreSQL to say anything.

Why: libpq has no read timeout. When the server hangs instead of refusing (a stopped or
swapped-out process, a full disk, a path that drops packets without resetting), the
kernel on the server's side still acknowledges what the client sends, so TCP keepalives
never fire, and ``statement_timeout`` is enforced by the very server that is not
running. Without a client-side bound, every request that touches the database waits as
long as the server is stuck, holding its worker thread, until no thread is left for
requests that do not need the database either.

psycopg2's wait callback (``set_wait_callback``) makes each libpq call a series of polls
that facecat waits on itself: ``_wait`` waits with a timeout, the *silence* of the
connection (seconds without any answer), and raises ``DatabaseSilent`` when it passes.
Connections get their silence from their class (``connection_class``), so the request
fast path and the slower session engine can differ. SQLAlchemy is told such a
connection is gone (``watch_silence``), so the pool drops it and the request answers
503 like any other outage. A silence of None waits as libpq would, forever.

Once a connection of a class went silent, the server is suspect (``catalog.suspicion``):
one request at a time waits on it as a probe, and the others fail at once instead of each
holding a worker thread for the whole silence. The first answer clears the suspicion.
"""

from __future__ import annotations

import select
import weakref
from typing import Any

import psycopg2
import psycopg2.extensions as pg
from sqlalchemy import event
from sqlalchemy.engine import Engine

from catalog.suspicion import Suspicion


class DatabaseSilent(psycopg2.OperationalError):
    """PostgreSQL said nothing for the connection's silence; the connection is dropped."""


def _wait(connection: Any) -> None:
    """psycopg2's wait callback: poll until done, waiting at most ``silence`` per step;
    while the server is suspect, only the one request probing it waits."""
    silence = getattr(connection, "silence", None)
    health: Suspicion | None = getattr(connection, "health", None)
    if health is None:
        _poll_until_done(connection, silence, None)
        return
    with health.call(_not_waiting):
        _poll_until_done(connection, silence, health)


def _not_waiting() -> DatabaseSilent:
    return DatabaseSilent(
        "the database did not answer a recent request and another request is "
        "checking it: not waiting"
    )


def _poll_until_done(connection: Any, silence: float | None, health: Suspicion | None) -> None:
    while True:
        state = connection.poll()
        if state == pg.POLL_OK:
            if health is not None:
                health.answered()
            return
        fd = connection.fileno()
        if state == pg.POLL_READ:
            ready = select.select([fd], [], [], silence)
        elif state == pg.POLL_WRITE:
            ready = select.select([], [fd], [], silence)
        else:  # pragma: no cover - psycopg2 documents only the three states
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        if not any(ready):
            if health is not None:
                health.silent()
            raise DatabaseSilent(
                f"the database sent nothing for {silence:g} s; the connection is dropped"
            )


_HEALTH: weakref.WeakKeyDictionary[Engine, Suspicion] = weakref.WeakKeyDictionary()


def connection_class(silence: float | None) -> type[pg.connection]:
    """A psycopg2 connection class whose waits end after ``silence`` seconds; each class
    (one per engine) keeps its own ``Suspicion``."""
    pg.set_wait_callback(_wait)  # process-wide; connections without a silence wait forever
    attributes = {"silence": silence, "health": Suspicion()}
    return type(f"SilenceBound{silence}", (pg.connection,), attributes)


def server_health(engine: Engine) -> Suspicion | None:
    """The health of the server behind ``engine`` (None: not bounded, e.g. SQLite)."""
    return _HEALTH.get(engine)


def watch_silence(engine: Engine, connections: type[pg.connection]) -> None:
    """Make SQLAlchemy treat ``DatabaseSilent`` as a lost connection (invalidate it), and
    remember the health of ``engine``'s connection class."""
    _HEALTH[engine] = connections.health  # type: ignore[attr-defined]

    @event.listens_for(engine, "handle_error")
    def _silent_is_a_disconnect(context: Any) -> None:
        if isinstance(context.original_exception, DatabaseSilent):
            context.is_disconnect = True
