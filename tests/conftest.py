"""Shared fixtures: apps on SQLite and PostgreSQL, storage on a folder and on S3 over HTTP.

- ``app`` / ``client`` / ``runner`` (the Flask tutorial's trio) run every test twice:
  on a SQLite file and on a PostgreSQL database (one per xdist worker, from
  ``FACECAT_TEST_DATABASE_URL``), both brought to ``head`` by the Alembic migrations,
  so the migrations are exercised by every test. PostgreSQL tables are truncated before
  each test; each SQLite test gets a copy of a migrated template file.
- ``storage`` runs a test on ``LocalStorage`` and on ``S3Storage`` against moto's S3
  server over HTTP (the same minio client code that talks to MinIO in production).
- ``make_face`` (and ``tests.factories.make_face``) adds real faces.

Under ``CI=true`` an unreachable PostgreSQL, Redis or S3 endpoint fails the tests that
need it; elsewhere they are skipped with the reason, so a laptop without PostgreSQL can
still run the SQLite half.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app import create_app
from catalog.services import find_service
from catalog.sql import db, serving
from catalog.sql.models import Face
from catalog.storage import Storage
from catalog.storage.local import LocalStorage
from catalog.storage.s3 import S3Storage
from tests.factories import make_face as _make_face

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
REPO_ROOT_MODELS = Path(__file__).resolve().parent.parent / "instance" / "models"


def unavailable(reason: str) -> None:
    """Fail under CI (the service must be there), skip elsewhere."""
    if CI:
        pytest.fail(f"{reason} (CI=true: required services must be reachable)", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(url: str, seconds: float = 30.0) -> None:
    """Poll ``url`` until a server answers it at all (any HTTP status), for tests that
    start one in a subprocess; raise if none does within ``seconds``."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answered, with an error status: it is up
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _migrated(url: str, tmp: Path) -> None:
    """Bring the database at ``url`` to head through the real migrations."""
    app = create_app(
        {"TESTING": True, "DATABASE_URL": url, "STORAGE_URL": (tmp / "objects").as_uri()}
    )
    try:
        db.upgrade(app)
    finally:
        db.get_engine(app).dispose()


# --- databases --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL URL tests may create databases through (skip/fail if unreachable)."""
    url = os.environ.get("FACECAT_TEST_DATABASE_URL", DEFAULT_POSTGRES_URL)
    engine = create_engine(db.engine_url(url), connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        unavailable(f"PostgreSQL at {make_url(url).render_as_string()} unreachable: {exc}")
    finally:
        engine.dispose()
    return url


def _drop_stale_databases(admin: Any, prefix: str) -> None:
    """Drop test databases left by runs that were killed (their pid no longer exists)."""
    names = admin.execute(
        text("SELECT datname FROM pg_database WHERE datname LIKE :p"), {"p": prefix + "%"}
    ).scalars()
    for name in list(names):
        pid = name.rsplit("_", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            admin.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def postgres_database(
    postgres_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated PostgreSQL database for this xdist worker, dropped at the end.

    The name carries the pid, so concurrent test runs on one server never collide, and
    stale ones from killed runs are recognised and dropped.
    """
    prefix = "facecat_test_"
    name = f"{prefix}{WORKER}_{os.getpid()}"
    admin = create_engine(db.engine_url(postgres_server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        _drop_stale_databases(connection, prefix)
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
    _migrated(url, tmp_path_factory.mktemp("pg-migrate"))
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_cleaner(postgres_database: str) -> Iterator[Callable[[], None]]:
    """Empties every table but alembic_version (tables added by later migrations too)."""
    engine = create_engine(db.engine_url(postgres_database))
    with engine.connect() as connection:
        tables = connection.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'alembic_version'"
            )
        ).scalars()
        statement = "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY"

    def clean() -> None:
        with engine.begin() as connection:
            # A test that leaked an open transaction would make TRUNCATE wait forever.
            connection.execute(text("SET LOCAL lock_timeout = '5s'"))
            connection.execute(text(statement + " CASCADE"))

    yield clean
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test copies it instead of re-running migrations."""
    tmp = tmp_path_factory.mktemp("sqlite-template")
    path = tmp / "template.db"
    _migrated(f"sqlite:///{path}", tmp)
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        path = tmp_path / "facecat.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("postgres_database")
    request.getfixturevalue("postgres_cleaner")()
    return url


# --- apps -------------------------------------------------------------------------------


@pytest.fixture
def app_factory(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    """Build apps on the test database with extra settings: ``app_factory(PUBLIC_BASE_URL=…)``."""
    made: list[Flask] = []

    def factory(**overrides: Any) -> Flask:
        config = {
            "TESTING": True,
            "DATABASE_URL": database_url,
            "STORAGE_URL": (tmp_path / "objects").as_uri(),
            "SERVER_NAME": "facecat.test",
            # Write serving counters through, so a test can read them right after a
            # request; tests/catalog/test_serving.py covers the batched mode.
            "SERVED_FLUSH_SECONDS": 0,
            **overrides,
        }
        app = create_app(config)
        made.append(app)
        return app

    yield factory
    for app in made:
        serving.shutdown(app)
        db.dispose(app)


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    """The app on the test database, images in a temporary folder."""
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask's test client for ``app``."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """Flask's CLI runner for ``app`` (``runner.invoke(args=["catalog", "stats"])``)."""
    return app.test_cli_runner()


@pytest.fixture
def db_session(app: Flask) -> Iterator[Session]:
    """A session on the app's database for arranging and inspecting data."""
    session = db.session_factory(app)()
    yield session
    session.close()


@pytest.fixture
def make_face(app: Flask, db_session: Session) -> Callable[..., Face]:
    """``make_face(gender="male", age=40, …)``: a committed face with real images."""
    return partial(_make_face, db_session, find_service(Storage, app))


# --- object storage ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``host:port`` of moto's S3 server, started once on a free loopback port."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # pragma: no cover - dev extra not installed
        unavailable(f"moto[server] is not installed: {exc}")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop()


_bucket_numbers = itertools.count()
_SESSION_TAG = uuid.uuid4().hex[:8]


@pytest.fixture
def s3_url(s3_endpoint: str) -> str:
    """A storage URL for a fresh bucket on the S3 endpoint (created on first write)."""
    bucket = f"facecat-{_SESSION_TAG}-{WORKER.lower()}-{next(_bucket_numbers)}"
    return f"s3://testing:testing@{s3_endpoint}/{bucket}?region=us-east-1"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    """An empty storage backend: a local folder, then a bucket on S3 over HTTP."""
    if request.param == "local":
        return LocalStorage(tmp_path / "storage")
    return S3Storage.from_url(request.getfixturevalue("s3_url"))


# --- redis (for the limits issue) -------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """``FACECAT_TEST_REDIS_URL`` if Redis answers there (skip/fail otherwise)."""
    import redis

    url = os.environ.get("FACECAT_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {url} unreachable: {exc}")
    return url
