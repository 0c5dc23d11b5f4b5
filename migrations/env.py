"""Alembic environment: runs migrations on the engine ``catalog.sql.db.alembic_config`` made.

The engine arrives in ``config.attributes["engine"]`` so migrations always target the
database ``create_app`` configured (Warehouse's configure-in-code approach); there is no
alembic.ini. SQLite needs batch mode because it cannot ALTER most things in place.
On PostgreSQL an advisory lock makes concurrent ``facecat db upgrade`` runs (web and
worker starting together) take turns instead of racing on the same DDL.
"""

from __future__ import annotations

import logging

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection

import catalog.sql.models  # noqa: F401  (registers every table on Base.metadata)
from catalog.sql.db import Base

logger = logging.getLogger("alembic.env")

config = context.config
target_metadata = Base.metadata

# Any constant works; it only has to be the same in every facecat process.
_MIGRATION_LOCK_ID = 0x6661636563617400  # "facecat\0"


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        compare_server_default=True,
    )


def run_migrations_offline() -> None:
    """``--sql`` mode: print the DDL instead of running it (for DBAs who review SQL)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the app's engine (or one made from the URL when called from plain alembic)."""
    engine = config.attributes.get("engine") or create_engine(
        config.get_main_option("sqlalchemy.url")
    )
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            # Fail instead of queueing forever behind a long query holding a table lock.
            connection.execute(text("SET lock_timeout = '10s'"))
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            connection.commit()
        try:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID}
                )
                connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
