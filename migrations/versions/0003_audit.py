"""audit_records: the hash-chained audit trail

Revision ID: 0002_audit (the third migration; its id predates the file's number and stays, so
databases already at it upgrade unchanged)
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import rotation.ledger.models

revision: str = "0002_audit"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("seq", BigId, nullable=False),
        sa.Column("at", rotation.ledger.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("secret", sa.String(length=200), nullable=True),
        sa.Column("version_id", sa.String(length=200), nullable=True),
        sa.Column("run_id", BigId, nullable=True),
        sa.Column("outcome", sa.String(length=80), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("seq"),
    )
    op.create_index("ix_audit_records_secret_seq", "audit_records", ["secret", "seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_records_secret_seq", table_name="audit_records")
    op.drop_table("audit_records")
