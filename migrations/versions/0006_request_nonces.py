"""request nonces: signed manual requests already used (replay protection)

Revision ID: 0006_nonces
Revises: 0005_expiry
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rotation.ledger.models

revision: str = "0006_nonces"
down_revision: str | None = "0005_expiry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = rotation.ledger.models.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "request_nonces",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(200), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("used_at", UTC_DATETIME, nullable=False),
        sa.Column("expires_at", UTC_DATETIME, nullable=False),
    )
    op.create_index("ix_request_nonces_expires_at", "request_nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_request_nonces_expires_at", table_name="request_nonces")
    op.drop_table("request_nonces")
