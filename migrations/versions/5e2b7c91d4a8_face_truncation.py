"""Faces: the truncation ψ they were generated with.

Revision ID: 5e2b7c91d4a8
Revises: 3d9e5f1a7c20
Create Date: 2026-12-06 21:30:00

The photoreal generator samples its style space truncated toward the mean style; ψ
(with the seed, the latent and the generator checksum already stored) is what remakes
a face and tells a catalog of varied faces from one of average ones. Nullable: the legacy
generators have no truncation, and rows of earlier releases have none.

Policy: a migration must not break the code release before it (web and worker may run
the old code against the new schema during a deploy): add columns nullable or with a
server default, drop only what the previous release no longer reads, and write a
downgrade that really restores the previous schema.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5e2b7c91d4a8"
down_revision: str | None = "3d9e5f1a7c20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("face") as batch_op:
        batch_op.add_column(sa.Column("truncation", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("face") as batch_op:
        batch_op.drop_column("truncation")
