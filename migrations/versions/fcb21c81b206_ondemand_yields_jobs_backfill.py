"""On-demand generation: per-cell strategy yields, single-flight jobs, backfill requests.

Revision ID: fcb21c81b206
Revises: cc42e6293d03
Create Date: 2026-11-21 12:05:00

Three new tables and no change to existing ones, so the previous release runs unchanged
against this schema:

* ``cell_yield``: candidates tried / robustly passed / seconds per (strategy, gender,
  age band); the on-demand strategy choice and the immediate 404 for hopeless filters
  read it.
* ``ondemand_job``: one row per normalised filter; its primary key is what makes one
  generation run per unmet filter across processes (single flight).
* ``backfill_request``: filters users asked for that were missing or slow, for the worker.

Policy: a migration must not break the code release before it (web and worker may run
the old code against the new schema during a deploy): add columns nullable or with a
server default, drop only what the previous release no longer reads, and write a
downgrade that really restores the previous schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fcb21c81b206"
down_revision: str | None = "cc42e6293d03"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cell_yield",
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("gender", sa.String(length=6), nullable=False),
        sa.Column("age_low", sa.SmallInteger(), nullable=False),
        sa.Column("age_high", sa.SmallInteger(), nullable=False),
        sa.Column("tried", sa.BigInteger(), nullable=False),
        sa.Column("passed", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("gender IN ('female', 'male')", name=op.f("ck_cell_yield_gender")),
        sa.CheckConstraint(
            "age_low >= 0 AND age_low <= age_high AND age_high <= 100",
            name=op.f("ck_cell_yield_band"),
        ),
        sa.CheckConstraint("passed >= 0 AND passed <= tried", name=op.f("ck_cell_yield_counts")),
        sa.PrimaryKeyConstraint("strategy", "gender", "age_low", name=op.f("pk_cell_yield")),
    )
    op.create_table(
        "ondemand_job",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("face_id", sa.Integer(), nullable=True),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["face_id"],
            ["face.id"],
            name=op.f("fk_ondemand_job_face_id_face"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_ondemand_job")),
    )
    op.create_table(
        "backfill_request",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("gender", sa.String(length=6), nullable=True),
        sa.Column("minimum_age", sa.SmallInteger(), nullable=False),
        sa.Column("maximum_age", sa.SmallInteger(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("admitted", sa.Integer(), nullable=False),
        sa.Column("first_requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fulfilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_backfill_request")),
    )


def downgrade() -> None:
    op.drop_table("backfill_request")
    op.drop_table("ondemand_job")
    op.drop_table("cell_yield")
