"""Alembic migrations: empty → head → empty on both databases, and they match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy import inspect

from catalog.sql import db
from catalog.sql.db import Base


def tables(app: Flask) -> set[str]:
    with db.get_engine(app).connect() as connection:
        return set(inspect(connection).get_table_names())


def test_downgrade_to_empty_and_upgrade_from_empty(app: Flask, runner: FlaskCliRunner) -> None:
    assert {"face", "face_cell", "ingest_run"} <= tables(app)
    result = runner.invoke(args=["db", "downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert tables(app) <= {"alembic_version"}
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "database at head" in result.output
    assert {"face", "face_cell", "ingest_run"} <= tables(app)


def test_schema_at_head_matches_the_models(app: Flask) -> None:
    """A model change without a migration (or a wrong migration) fails here."""
    with db.get_engine(app).connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert compare_metadata(context, Base.metadata) == []


def test_db_current_reports_head(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["db", "current"])
    assert result.exit_code == 0
    assert "(head)" in result.output


def test_upgrade_is_idempotent(app: Flask, runner: FlaskCliRunner) -> None:
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert runner.invoke(args=["db", "upgrade"]).exit_code == 0
    assert {"face", "face_cell"} <= tables(app)
