"""``facecat catalog``: what the catalog holds, and whether the deployment is healthy.

``doctor`` is Thumbor's ``doctor.py`` idea: one command that checks every dependency the
service needs (database reachable and migrated, storage reachable, slot counters
consistent, model weights present and verified) and exits non-zero if any required one
fails, so it can gate a deploy.
"""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy.exc import SQLAlchemyError

from analysis.vocabulary import BANDS, GENDERS
from catalog.fsck import fsck_command
from catalog.services import find_service
from catalog.sql.cells import all_cells, verify_cells
from catalog.sql.db import database_revision, session_scope
from catalog.storage import Storage, StorageError, redact_url
from catalog.web.status import catalog_stats, target_composition

catalog_cli = AppGroup("catalog", help="Inspect the face catalog and check the deployment.")
catalog_cli.add_command(fsck_command)


@catalog_cli.command("stats")
def stats_command() -> None:
    """Faces per gender × age band, with actual and target shares.

    Example: ``facecat catalog stats``.
    """
    with session_scope() as session:
        stats = catalog_stats(all_cells(session), target_composition())
    click.echo(f"{stats['total']} faces")
    click.echo(f"{'band':>6}  " + "  ".join(f"{g:>22}" for g in GENDERS))
    rows = {(row["gender"], row["band"]): row for row in stats["bands"]}
    for band in BANDS:
        cells = []
        for gender in GENDERS:
            row = rows[(gender, band.label)]
            cells.append(f"{row['count']:>8} {row['share']:>6.1%} ({row['target']:>5.1%})")
        click.echo(f"{band.label:>6}  " + "  ".join(cells))
    click.echo("count share (target share)")


@catalog_cli.command("collect-avatars")
def collect_avatars_command() -> None:
    """Remove the oldest avatar renders beyond FACECAT_AVATAR_STORE_BYTES.

    The ingest worker does this on every run; this is for a deployment without one.
    Example: ``facecat catalog collect-avatars``.
    """
    from catalog.web.avatar import collect_avatars

    try:
        click.echo(collect_avatars(current_app._get_current_object()).summary())  # type: ignore[attr-defined]
    except StorageError as exc:
        raise click.ClickException(f"storage failed: {exc}") from exc


@catalog_cli.command("doctor")
def doctor_command() -> None:
    """Check database, migrations, slot counters, storage and model weights.

    Prints one line per check and exits 1 if a required one fails.
    Example: ``facecat catalog doctor``.
    """
    failures = 0

    def report(ok: bool, name: str, detail: str, required: bool = True) -> None:
        nonlocal failures
        label = "ok" if ok else ("FAIL" if required else "warn")
        click.echo(f"{label:4}  {name:10}  {detail}")
        failures += int(not ok and required)

    db_url = redact_url(current_app.config["DATABASE_URL"])
    try:
        current, head = database_revision()
    except SQLAlchemyError as exc:
        report(False, "database", f"{db_url} unreachable: {exc.__class__.__name__}: {exc}")
    else:
        report(True, "database", f"{db_url} reachable")
        report(
            current == head,
            "migrations",
            f"at {current or 'an empty schema'}, head is {head}"
            + ("" if current == head else " (run `facecat db upgrade`)"),
        )
        if current == head:
            with session_scope() as session:
                problems = verify_cells(session)
            report(not problems, "slots", "; ".join(problems[:5]) or "counters match faces")

    storage_url = redact_url(current_app.config["STORAGE_URL"])
    try:
        find_service(Storage).ping()
    except StorageError as exc:
        report(False, "storage", f"{storage_url}: {exc}")
    else:
        report(True, "storage", f"{storage_url} reachable")

    from analysis.weights import ARTIFACTS, FETCH_COMMAND, artifact_status

    models_dir = current_app.config["MODELS_DIR"]
    for name, state in artifact_status(models_dir).items():
        optional = ARTIFACTS[name].package.optional
        hint = "" if state == "ok" else f" (run `{FETCH_COMMAND}{' --legacy' if optional else ''}`)"
        report(state == "ok", "model", f"{name}: {state}{hint}", required=not optional)

    if failures:
        raise click.ClickException(f"{failures} check(s) failed")
    click.echo("all required checks passed")
