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
"""

from __future__ import annotations

import functools
import select
from typing import Any

import psycopg2
import psycopg2.extensions as pg
from sqlalchemy import event
from sqlalchemy.engine import Engine


class DatabaseSilent(psycopg2.OperationalError):
    """PostgreSQL said nothing for the connection's silence; the connection is dropped."""


def _wait(connection: Any) -> None:
    """psycopg2's wait callback: poll until done, waiting at most ``silence`` per step."""
    silence = getattr(connection, "silence", None)
    while True:
        state = connection.poll()
        if state == pg.POLL_OK:
            return
        fd = connection.fileno()
        if state == pg.POLL_READ:
            ready = select.select([fd], [], [], silence)
        elif state == pg.POLL_WRITE:
            ready = select.select([], [fd], [], silence)
        else:  # pragma: no cover - psycopg2 documents only the three states
            raise psycopg2.OperationalError(f"unexpected poll state {state}")
        if not any(ready):
            raise DatabaseSilent(
                f"the database sent nothing for {silence:g} s; the connection is dropped"
            )


@functools.cache
def connection_class(silence: float | None) -> type[pg.connection]:
    """A psycopg2 connection class whose waits end after ``silence`` seconds."""
    pg.set_wait_callback(_wait)  # process-wide; connections without a silence wait forever
    return type(f"SilenceBound{silence}", (pg.connection,), {"silence": silence})


def watch_silence(engine: Engine) -> None:
    """Make SQLAlchemy treat ``DatabaseSilent`` as a lost connection (invalidate it)."""

    @event.listens_for(engine, "handle_error")
    def _silent_is_a_disconnect(context: Any) -> None:
        if isinstance(context.original_exception, DatabaseSilent):
            context.is_disconnect = True
