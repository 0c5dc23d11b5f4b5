"""``facecat catalog stats`` and ``facecat catalog doctor`` through Flask's CLI runner."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner
from sqlalchemy.orm import Session

from catalog.sql.models import Face, FaceCell
from tests.conftest import REPO_ROOT_MODELS, _free_port, unavailable


def test_stats_prints_counts_per_band(
    runner: FlaskCliRunner, make_face: Callable[..., Face]
) -> None:
    make_face(gender="female", age=25)
    make_face(gender="male", age=65)
    make_face(gender="male", age=66)
    result = runner.invoke(args=["catalog", "stats"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "3 faces"
    row_60 = next(line for line in lines if line.strip().startswith("60+"))
    assert row_60.split()[1:3] == ["0", "0.0%"] and row_60.split()[5:7] == ["2", "66.7%"]


def _doctor(app_factory: Callable[..., Flask], **overrides: object) -> tuple[int, str]:
    result = app_factory(**overrides).test_cli_runner().invoke(args=["catalog", "doctor"])
    return result.exit_code, result.output


def test_doctor_passes_on_a_healthy_deployment(app_factory: Callable[..., Flask]) -> None:
    models = Path(os.environ.get("FACECAT_MODELS_DIR") or REPO_ROOT_MODELS)
    if not (models / "dcgan").is_dir():
        unavailable(f"model weights not fetched into {models} (run `make test`)")
    code, output = _doctor(app_factory, MODELS_DIR=str(models))
    assert code == 0, output
    assert "all required checks passed" in output
    assert "FAIL" not in output


def test_doctor_fails_without_weights_and_names_the_fix(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    code, output = _doctor(app_factory, MODELS_DIR=str(tmp_path / "no-models"))
    assert code == 1
    assert "FAIL  model" in output and "facecat models fetch" in output
    assert "ok    database" in output and "ok    storage" in output


def test_doctor_fails_when_schema_is_behind(
    app_factory: Callable[..., Flask], runner: FlaskCliRunner, tmp_path: Path
) -> None:
    runner.invoke(args=["db", "downgrade", "base"])
    try:
        code, output = _doctor(app_factory, MODELS_DIR=str(tmp_path))
        assert code == 1 and "FAIL  migrations" in output and "facecat db upgrade" in output
    finally:
        runner.invoke(args=["db", "upgrade"])


def test_doctor_fails_on_slot_drift(
    app_factory: Callable[..., Flask],
    make_face: Callable[..., Face],
    db_session: Session,
    tmp_path: Path,
) -> None:
    make_face(gender="male", age=40)
    db_session.execute(FaceCell.__table__.update().values(n=3))
    db_session.commit()
    code, output = _doctor(app_factory, MODELS_DIR=str(tmp_path))
    assert code == 1 and "FAIL  slots" in output and "male 40" in output


@pytest.mark.s3
def test_doctor_fails_when_storage_is_down(
    app_factory: Callable[..., Flask], tmp_path: Path
) -> None:
    url = f"s3://k:s@127.0.0.1:{_free_port()}/bucket?region=us-east-1"
    code, output = _doctor(app_factory, STORAGE_URL=url, MODELS_DIR=str(tmp_path))
    assert code == 1 and "FAIL  storage" in output
    assert ":s@" not in output  # the secret is redacted


def test_a_command_on_an_unmigrated_database_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the ``facecat`` console script itself (its root group turns the SQL error
    into the message), on a fresh SQLite file: before, ``keys list`` printed a driver
    traceback about a missing table."""
    from click.testing import CliRunner
    from sqlalchemy import create_engine, inspect

    from app import main

    database = tmp_path / "fresh.db"
    monkeypatch.setenv("FACECAT_DATABASE_URL", f"sqlite:///{database}")
    monkeypatch.setenv("FACECAT_STORAGE_URL", (tmp_path / "objects").as_uri())
    cli = CliRunner()

    result = cli.invoke(main, ["keys", "list"])
    assert result.exit_code == 1, result.output
    assert "is at an empty schema" in result.output
    assert "run `facecat db upgrade` first" in result.output
    assert "Traceback" not in result.output and "no such table" not in result.output
    assert inspect(create_engine(f"sqlite:///{database}")).get_table_names() == []

    assert cli.invoke(main, ["db", "upgrade"]).exit_code == 0
    result = cli.invoke(main, ["keys", "list"])
    assert result.exit_code == 0, result.output
