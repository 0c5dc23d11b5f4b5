"""Look-alike jobs (face_gen): parameters, status, outputs and their expiry, webhooks.

Revision ID: 7a1c3e5f9b20
Revises: 5e2b7c91d4a8
Create Date: 2026-12-07 02:00:00

A new table only, so the previous release runs unchanged against this schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7a1c3e5f9b20"
down_revision: str | None = "5e2b7c91d4a8"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "facegen_job",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("track_id", sa.String(64), nullable=True),
        sa.Column("webhook", sa.Text(), nullable=True),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("meta", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("webhook_status", sa.String(16), nullable=True),
        sa.Column("webhook_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("webhook_error", sa.Text(), nullable=True),
    )
    op.create_index("ix_facegen_job_expires_at", "facegen_job", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_facegen_job_expires_at", table_name="facegen_job")
    op.drop_table("facegen_job")
