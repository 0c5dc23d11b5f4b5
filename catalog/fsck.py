"""``facecat catalog fsck``: objects no row points at, and rows whose objects are missing.

Ingest uploads a face's objects before committing its row, so a crash or a failure
between the two leaves *orphans* (objects without a row): harmless, but they take space.
The opposite, a row whose objects are missing, must never happen through ingest; it would
mean a broken image URL, so fsck reports it loudly (someone deleted objects by hand, or
restored the database and the bucket from different points in time).

Rows are read before keys are listed: a row committed after the read cannot be reported
as missing its objects, because its objects were uploaded before its commit and so
before the listing. The sweep (``--delete-orphans``) holds the object-writes lock
exclusively (``catalog.sql.locking``), so it never deletes the objects of a batch whose rows
are about to be committed; without the flag, objects of a batch in flight may show up
as orphans for a moment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import click
from flask.cli import with_appcontext
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog.services import find_service
from catalog.sql.locking import object_writes
from catalog.sql.models import Face
from catalog.storage import Storage, StorageError
from ingest.ports import FACES_PREFIX, THUMBS_PREFIX

logger = logging.getLogger(__name__)

PREFIXES = (FACES_PREFIX, THUMBS_PREFIX)


@dataclass
class FsckReport:
    """What a check found and, with ``delete_orphans``, what it removed."""

    rows: int = 0
    objects: int = 0
    orphans: list[str] = field(default_factory=list)
    missing: list[tuple[int, str]] = field(default_factory=list)  # (face id, key)
    deleted: int = 0
    delete_errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No row lacks an object and no orphan is left behind."""
        return not self.missing and len(self.orphans) == self.deleted


def _scan(session_factory: sessionmaker[Session], storage: Storage, report: FsckReport) -> None:
    referenced: dict[str, int] = {}
    with session_factory() as session:
        for face_id, image_key, thumb_key in session.execute(
            select(Face.id, Face.image_key, Face.thumb_key).order_by(Face.id)
        ):
            referenced[image_key] = face_id
            referenced[thumb_key] = face_id
            report.rows += 1
    present: set[str] = set()
    for prefix in PREFIXES:
        present.update(storage.keys(prefix))
    report.objects = len(present)
    report.orphans = sorted(present - referenced.keys())
    report.missing = sorted(
        (face_id, key) for key, face_id in referenced.items() if key not in present
    )


def fsck(
    session_factory: sessionmaker[Session], storage: Storage, *, delete_orphans: bool = False
) -> FsckReport:
    """Compare the catalog's rows with the stored objects; optionally delete orphans.

    Only keys under ``faces/`` and ``thumbs/`` are considered: anything else in the
    bucket is not facecat's to judge. Rows with missing objects are only reported:
    deleting a face is a decision for a person (``remove_face`` keeps slots dense).
    """
    report = FsckReport()
    if not delete_orphans:
        _scan(session_factory, storage, report)
        return report
    with object_writes(session_factory.kw["bind"], exclusive=True):
        _scan(session_factory, storage, report)
        for key in report.orphans:
            try:
                storage.delete(key)
                report.deleted += 1
            except StorageError as exc:
                report.delete_errors.append(f"{key}: {exc}")
    logger.info("fsck deleted %d of %d orphans", report.deleted, len(report.orphans))
    return report


@click.command("fsck")
@click.option(
    "--delete-orphans", is_flag=True, help="Delete objects that no catalog row points at."
)
@click.option("--limit", default=20, show_default=True, help="How many keys of each kind to list.")
@with_appcontext
def fsck_command(delete_orphans: bool, limit: int) -> None:
    """Find stored objects no row points at, and rows whose objects are missing.

    Exits 1 if a row lacks an object, or if orphans remain (not deleted).
    Examples: ``facecat catalog fsck``, ``facecat catalog fsck --delete-orphans``.
    """
    from catalog.sql.db import session_factory

    try:
        report = fsck(session_factory(), find_service(Storage), delete_orphans=delete_orphans)
    except StorageError as exc:
        raise click.ClickException(f"storage unreachable: {exc}") from None
    click.echo(f"{report.rows} rows, {report.objects} objects")
    click.echo(f"{len(report.orphans)} orphaned objects (no row points at them)")
    for key in report.orphans[:limit]:
        click.echo(f"  orphan  {key}")
    click.echo(f"{len(report.missing)} rows whose objects are missing")
    for face_id, key in report.missing[:limit]:
        click.echo(f"  missing face {face_id}: {key}")
    if delete_orphans:
        click.echo(f"deleted {report.deleted} orphaned objects")
        for error in report.delete_errors[:limit]:
            click.echo(f"  could not delete {error}")
    if not report.clean:
        hint = "" if delete_orphans or not report.orphans else " (run with --delete-orphans)"
        raise click.ClickException(f"catalog and storage disagree{hint}")
    click.echo("catalog and storage agree")
