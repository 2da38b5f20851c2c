"""audit chain head: one row holding the last record's seq and hash (one-statement appends)

Revision ID: 0007_audit_head
Revises: 0006_nonces
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_audit_head"
down_revision: str | None = "0006_nonces"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64
LAST = "ORDER BY seq DESC LIMIT 1"


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # the head of the chain as it stands (the last record), or the genesis
    op.execute(
        sa.text(
            "INSERT INTO audit_head (id, seq, hash, prev_hash) "
            "SELECT 1, COALESCE(MAX(seq), 0), "
            f"COALESCE((SELECT hash FROM audit_records {LAST}), '{GENESIS}'), "
            f"COALESCE((SELECT prev_hash FROM audit_records {LAST}), '{GENESIS}') "
            "FROM audit_records"
        )
    )


def downgrade() -> None:
    op.drop_table("audit_head")
