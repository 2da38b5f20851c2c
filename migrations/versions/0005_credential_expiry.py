"""credential expiry: when the current credential of a schedule expires (certificates)

Revision ID: 0005_expiry
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rotation.ledger.models

revision: str = "0005_expiry"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = rotation.ledger.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("expires_at", UTC_DATETIME, nullable=True))
        batch.add_column(sa.Column("expiry_checked_at", UTC_DATETIME, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("expiry_checked_at")
        batch.drop_column("expires_at")
