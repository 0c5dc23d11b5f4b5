"""Ingest runs: a heartbeat, so runs whose process died can be told from running ones.

Revision ID: 3d9e5f1a7c20
Revises: fcb21c81b206
Create Date: 2026-11-30 23:20:00

``ingest_run.heartbeat_at`` is written with the run's counts after every batch. A run left
``running`` by a killed process stops beating, and the next run to start marks it
``died`` (``catalog.sql.admission.SqlIngestCatalog.start_run``). Nullable: rows of earlier
releases have none (their ``started_at`` stands in), and the previous release, which does
not know the column, keeps working against this schema.

Policy: a migration must not break the code release before it (web and worker may run
the old code against the new schema during a deploy): add columns nullable or with a
server default, drop only what the previous release no longer reads, and write a
downgrade that really restores the previous schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3d9e5f1a7c20"
down_revision: str | None = "fcb21c81b206"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_run") as batch_op:
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingest_run") as batch_op:
        batch_op.drop_column("heartbeat_at")
