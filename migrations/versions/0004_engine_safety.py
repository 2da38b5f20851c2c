"""engine safety: soft-removed policies and schedules, the dispatcher's last tick

Revision ID: 0004
Revises: 0002_audit
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rotation.ledger.models

revision: str = "0004"
down_revision: str | None = "0002_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = rotation.ledger.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    for table in ("policies", "schedules"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("missing_since", UTC_DATETIME, nullable=True))
            batch.add_column(sa.Column("removed_at", UTC_DATETIME, nullable=True))
    op.create_table(
        "dispatcher_ticks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", UTC_DATETIME, nullable=False),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("dispatcher_ticks")
    for table in ("schedules", "policies"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("removed_at")
            batch.drop_column("missing_since")
