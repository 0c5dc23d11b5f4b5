"""Database engine, per-request sessions, and the ``facecat db`` Alembic commands.

The shape of the Flask tutorial's ``db.py``: ``get_session`` caches a session on ``g``,
a teardown closes it, and ``init_app`` wires both. Alembic is configured in code
(Warehouse's ``_configure_alembic``), so the URL always comes from ``create_app``.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import click
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app, g
from flask.cli import AppGroup
from sqlalchemy import MetaData, create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from catalog.services import find_service, provide_service, services
from catalog.sql.deadline import DatabaseSilent, connection_class, watch_silence

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

# Named constraints, so Alembic can drop and alter them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for every facecat table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def engine_url(url: str) -> URL:
    """The URL with an explicit driver: plain ``postgresql://`` means psycopg2 here.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, but facecat depends on
    psycopg2 (``psycopg2-binary``), so the documented URL form would fail to import.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed


# PostgreSQL: how long a new connection may take (libpq's connect_timeout; without it a
# server that accepts but never answers hangs the connect). A web request's statements
# are bounded by DATABASE_TIMEOUT_SECONDS, on the server (statement_timeout) and on the
# client (catalog.sql.deadline, for a server that hangs). Ingest and the CLI keep no
# statement limit (batches, locks and migrations may take longer), but a server silent
# for SESSION_SILENCE_SECONDS still frees them.
CONNECT_TIMEOUT_SECONDS = 5
REQUEST_TIMEOUT_SECONDS = 5.0
SESSION_SILENCE_SECONDS = 60.0


def make_engine(
    url: str, *, serving: bool = False, timeout: float = REQUEST_TIMEOUT_SECONDS
) -> Engine:
    """An engine with the settings each backend needs to serve concurrent requests.

    ``serving=True`` makes the engine of the request fast path (``get_connection``):
    connections are opened in autocommit mode, so single SELECTs send no BEGIN/COMMIT
    and checkouts never switch isolation levels (a round trip each with psycopg2), and
    they are not pinged on checkout. Without the ping, the first read after a
    database restart meets a dead connection; SQLAlchemy then replaces the whole pool and
    ``serving_read`` repeats the read on a fresh connection, so no request fails; with
    the ping, every request would pay one more round trip. Ingest and the CLI keep it.
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            **({"isolation_level": "AUTOCOMMIT"} if serving else {}),
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets readers proceed while ingest writes; foreign keys are off by default.
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    if serving:
        # A request's single SELECTs take milliseconds: a statement still running after
        # ``timeout`` is stuck (a lock, an overloaded server, a hung one) and the request
        # answers 503 instead of holding its worker thread.
        connections = connection_class(timeout)
        engine = create_engine(
            engine_url(url),
            isolation_level="AUTOCOMMIT",
            pool_size=5,
            max_overflow=10,
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "options": f"-c statement_timeout={round(timeout * 1000)}",
                "connection_factory": connections,
            },
        )
    else:
        # values_plus_batch: psycopg2 sends executemany UPDATEs (the batched serving
        # counters) 100 per round trip instead of one by one.
        connections = connection_class(SESSION_SILENCE_SECONDS)
        engine = create_engine(
            engine_url(url),
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            executemany_mode="values_plus_batch",
            connect_args={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "connection_factory": connections,
            },
        )
    watch_silence(engine, connections)
    return engine


class Database:
    """One app's engines and sessionmaker, each created on first use: web workers fork
    after ``create_app``, and a pool made before the fork would be shared by every worker."""

    def __init__(self, url: str, timeout: float = REQUEST_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout = timeout
        self._engine: Engine | None = None
        self._serving_engine: Engine | None = None
        self._sessionmaker: sessionmaker[Session] | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The engine of sessions, jobs and the CLI (``make_engine``)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    engine = make_engine(self.url)
                    self._sessionmaker = sessionmaker(engine, expire_on_commit=False)
                    self._engine = engine
        return self._engine

    @property
    def serving_engine(self) -> Engine:
        """The engine behind ``get_connection`` (see ``make_engine(serving=True)``)."""
        if self._serving_engine is None:
            with self._lock:
                if self._serving_engine is None:
                    self._serving_engine = make_engine(self.url, serving=True, timeout=self.timeout)
        return self._serving_engine

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        """Sessions bound to ``engine``."""
        if self._sessionmaker is None:
            _ = self.engine  # the property makes both
        assert self._sessionmaker is not None
        return self._sessionmaker

    def dispose(self) -> None:
        """Close every pooled connection of both engines (tests, forks, shutdown)."""
        for engine in (self._engine, self._serving_engine):
            if engine is not None:
                engine.dispose()


def get_engine(app: Flask | None = None) -> Engine:
    """The app's engine, created on first use."""
    return find_service(Database, app).engine


def get_serving_engine(app: Flask | None = None) -> Engine:
    """The engine behind ``get_connection``."""
    return find_service(Database, app).serving_engine


def dispose(app: Flask) -> None:
    """Close every pooled connection of the app's engines (tests, forks, shutdown)."""
    database = services(app).made(Database)
    if database is not None:
        database.dispose()


def session_factory(app: Flask | None = None) -> sessionmaker[Session]:
    """A sessionmaker bound to the app's engine, for work outside a request (CLI, jobs)."""
    return find_service(Database, app).sessionmaker


def get_session() -> Session:
    """The session of the current app context, created on first use."""
    if "db_session" not in g:
        g.db_session = session_factory()()
    return g.db_session


def get_connection() -> Connection:
    """An autocommit Core connection for the current app context.

    The serving fast path: single SELECTs need neither the ORM nor a transaction, so
    they skip both (and psycopg2's BEGIN/COMMIT round trips).
    """
    if "db_connection" not in g:
        g.db_connection = get_serving_engine().connect()
    return g.db_connection


T = TypeVar("T")


def serving_read(read: Callable[[Connection], T]) -> T:
    """``read(get_connection())``, run once more on a fresh connection if that one was dead.

    Why: serving connections are not pinged on checkout (it would cost a round trip per
    request), so after a database restart or a dropped connection the first read on each
    pooled connection fails. SQLAlchemy then invalidates the pool, and a read can safely
    be repeated, so the request is answered instead of getting a 503. Only errors that
    SQLAlchemy recognised as a lost connection are retried, and only once.
    """
    try:
        return read(get_connection())
    except DBAPIError as exc:
        # A server that went silent is not a stale pooled connection: asking again would
        # only double the wait before the 503.
        if not exc.connection_invalidated or isinstance(exc.orig, DatabaseSilent):
            raise
        dead = g.pop("db_connection", None)
        if dead is not None:
            dead.close()
        return read(get_connection())


@contextmanager
def session_scope(app: Flask | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error (for jobs and CLI)."""
    session = session_factory(app)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def close_session(_exc: BaseException | None = None) -> None:
    """Teardown: give the connection back to the pool."""
    session = g.pop("db_session", None)
    if session is not None:
        session.close()
    connection = g.pop("db_connection", None)
    if connection is not None:
        connection.close()


def alembic_config(app: Flask | None = None) -> AlembicConfig:
    """Alembic's configuration, built in code from the app's database URL."""
    app = app or current_app
    # stdout looked up now, not at import: `db current` output then reaches whatever
    # stream click (or a test runner) has installed.
    cfg = AlembicConfig(stdout=sys.stdout)
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation would mangle % in passwords.
    url = engine_url(app.config["DATABASE_URL"]).render_as_string(hide_password=False)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = get_engine(app)
    return cfg


@functools.cache
def head_revision() -> str | None:
    """The newest migration this code ships (read once: it cannot change while running)."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The migration the database behind ``connection`` is at; None for an empty schema."""
    return MigrationContext.configure(connection).get_current_revision()


def database_revision(app: Flask | None = None) -> tuple[str | None, str | None]:
    """(current revision, head revision) of the app's database; current is None when empty."""
    with get_engine(app).connect() as connection:
        return current_revision(connection), head_revision()


def schema_lag(current: str | None, head: str | None) -> str | None:
    """``"at CURRENT, needs HEAD"`` when the schema is not at head, else None: the one
    wording the CLI, ``/healthz`` and the API use for an unmigrated database."""
    if current == head:
        return None
    return f"at {current or 'an empty schema'}, needs {head}"


def schema_behind_hint(app: Flask) -> str | None:
    """What to tell a user whose command failed on SQL, if the schema is not at head.

    Why: on a database nobody has migrated, every command that touches rows dies with a
    raw "no such table" traceback, some after minutes of work (``measure-yields``
    generates before it writes). None when the schema is current or cannot be read, so
    the original error is what the user sees.
    """
    try:
        lag = schema_lag(*database_revision(app))
    except SQLAlchemyError:
        return None
    if lag is None:
        return None
    url = engine_url(app.config["DATABASE_URL"]).render_as_string()
    return f"the database ({url}) is {lag}: run `facecat db upgrade` first"


def upgrade(app: Flask | None = None, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (used by the CLI, the run command and tests)."""
    alembic_command.upgrade(alembic_config(app), revision)


def downgrade(app: Flask | None = None, revision: str = "base") -> None:
    """Take the schema back to ``revision``."""
    alembic_command.downgrade(alembic_config(app), revision)


db_cli = AppGroup("db", help="Database migrations (Alembic).")


@db_cli.command("upgrade")
@click.argument("revision", default="head")
def upgrade_command(revision: str) -> None:
    """Apply migrations up to REVISION (default: head). Example: ``facecat db upgrade``."""
    upgrade(revision=revision)
    click.echo(f"database at {revision}")


@db_cli.command("downgrade")
@click.argument("revision", default="-1")
def downgrade_command(revision: str) -> None:
    """Revert migrations down to REVISION (default: one step; ``base`` empties it)."""
    downgrade(revision=revision)
    click.echo(f"database at {revision}")


@db_cli.command("current")
def current_command() -> None:
    """Show the revision the database is at."""
    alembic_command.current(alembic_config(), verbose=False)


@db_cli.command("revision")
@click.option("-m", "--message", required=True, help="What the migration does.")
def revision_command(message: str) -> None:
    """Autogenerate a new migration from the models (review it before committing)."""
    alembic_command.revision(alembic_config(), message=message, autogenerate=True)


def init_app(app: Flask) -> None:
    """Provide the app's ``Database`` and register the session teardown (``catalog.cli``
    registers the ``db`` group)."""
    provide_service(
        app,
        Database,
        lambda: Database(app.config["DATABASE_URL"], app.config["DATABASE_TIMEOUT_SECONDS"]),
    )
    app.teardown_appcontext(close_session)
