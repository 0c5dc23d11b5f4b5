"""API keys: hashed token keys with a user class, an owner and a revocation time.

Revision ID: cc42e6293d03
Revises: 8b6aa646d580
Create Date: 2026-11-21 11:45:00

Only the SHA-256 of each key is stored; ``key_id`` is the short public part of the key
that lookups go through (unique), so a request costs one indexed seek. ``owner`` is
indexed because creating a key counts the owner's active keys.

Policy: a migration must not break the code release before it (web and worker may run
the old code against the new schema during a deploy): add columns nullable or with a
server default, drop only what the previous release no longer reads, and write a
downgrade that really restores the previous schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cc42e6293d03"
down_revision: str | None = "8b6aa646d580"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=254), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("user_class", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "user_class IN ('basic', 'professional', 'enterprise')",
            name=op.f("ck_api_key_user_class"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_id", name=op.f("uq_api_key_key_id")),
    )
    op.create_index(op.f("ix_api_key_owner"), "api_key", ["owner"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_api_key_owner"), table_name="api_key")
    op.drop_table("api_key")
