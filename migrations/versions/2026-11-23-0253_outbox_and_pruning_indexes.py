"""outbox and pruning indexes

Revision ID: 0003
Revises: 0002
Created: 2026-11-23 02:53:55.194821
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_message",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("topic", sa.String(length=50), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "available_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'delivered', 'logged', 'dead')",
            name=op.f("ck_outbox_message_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_message")),
    )
    op.create_index(
        "ix_outbox_message_dead",
        "outbox_message",
        ["id"],
        unique=False,
        postgresql_where="status = 'dead'",
    )
    op.create_index(
        "ix_outbox_message_due",
        "outbox_message",
        ["available_at", "id"],
        unique=False,
        postgresql_where="status = 'pending'",
    )
    op.create_index("ix_auth_event_created_at", "auth_event", ["created_at"], unique=False)
    op.create_index(
        "ix_idempotency_key_created_at", "idempotency_key", ["created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_idempotency_key_created_at", table_name="idempotency_key")
    op.drop_index("ix_auth_event_created_at", table_name="auth_event")
    op.drop_index(
        "ix_outbox_message_due", table_name="outbox_message", postgresql_where="status = 'pending'"
    )
    op.drop_index(
        "ix_outbox_message_dead", table_name="outbox_message", postgresql_where="status = 'dead'"
    )
    op.drop_table("outbox_message")
