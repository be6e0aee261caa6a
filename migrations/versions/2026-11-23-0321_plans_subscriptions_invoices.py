"""plans, subscriptions, invoices; the ledger's invoice debits

Revision ID: 0004
Revises: 0003
Created: 2026-11-23 03:21:15.871322
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The ledger's checks before and after this revision: an invoice paid from the balance is a
# debit of type `invoice` that names its invoice.
_LEDGER_CHECKS_0002 = {
    "type": "type IN ('deposit', 'order', 'refund', 'adjustment')",
    "type_matches_amount": (
        "(type = 'deposit' AND amount_cents > 0 AND deposit_id IS NOT NULL)"
        " OR (type = 'order' AND amount_cents < 0 AND order_id IS NOT NULL)"
        " OR (type = 'refund' AND amount_cents > 0 AND order_id IS NOT NULL)"
        " OR type = 'adjustment'"
    ),
}
_LEDGER_CHECKS_0004 = {
    "type": "type IN ('deposit', 'order', 'refund', 'adjustment', 'invoice')",
    "type_matches_amount": (
        "(type = 'deposit' AND amount_cents > 0 AND deposit_id IS NOT NULL)"
        " OR (type = 'order' AND amount_cents < 0 AND order_id IS NOT NULL)"
        " OR (type = 'refund' AND amount_cents > 0 AND order_id IS NOT NULL)"
        " OR (type = 'invoice' AND amount_cents < 0 AND invoice_id IS NOT NULL)"
        " OR type = 'adjustment'"
    ),
}


def _set_ledger_checks(checks: dict[str, str]) -> None:
    for name, condition in checks.items():
        op.drop_constraint(op.f(f"ck_ledger_entry_{name}"), "ledger_entry", type_="check")
        op.create_check_constraint(op.f(f"ck_ledger_entry_{name}"), "ledger_entry", condition)


def upgrade() -> None:
    op.create_table(
        "plan",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("monthly_price_cents", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.CheckConstraint("monthly_price_cents > 0", name=op.f("ck_plan_price_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan")),
    )
    op.create_table(
        "invoice",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("payment_method", sa.String(length=10), nullable=True),
        sa.Column("card_brand", sa.String(length=20), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("attempt_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "payment_method IS NULL OR payment_method IN ('balance', 'card')",
            name=op.f("ck_invoice_payment_method"),
        ),
        sa.CheckConstraint(
            "status = 'open' OR next_attempt_at IS NULL", name=op.f("ck_invoice_no_attempt_closed")
        ),
        sa.CheckConstraint(
            "status = 'paid' OR paid_at IS NULL", name=op.f("ck_invoice_paid_at_when_paid")
        ),
        sa.CheckConstraint(
            "status IN ('open', 'paid', 'uncollectible')", name=op.f("ck_invoice_status")
        ),
        sa.CheckConstraint(
            "attempt_count >= 0", name=op.f("ck_invoice_attempt_count_not_negative")
        ),
        sa.CheckConstraint("total_cents > 0", name=op.f("ck_invoice_total_positive")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_invoice_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice")),
        sa.UniqueConstraint(
            "account_id", "period_start", name="uq_invoice_account_id_period_start"
        ),
    )
    op.create_index(
        "ix_invoice_account_id_created_at", "invoice", ["account_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_invoice_due",
        "invoice",
        ["next_attempt_at"],
        unique=False,
        postgresql_where="status = 'open'",
    )
    op.create_table(
        "subscription",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("canceled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "cancel_at_period_end = (ended_at IS NOT NULL)",
            name=op.f("ck_subscription_ended_when_canceled"),
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_subscription_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plan.id"], name=op.f("fk_subscription_plan_id_plan")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription")),
    )
    op.create_index(
        "ix_subscription_account_id_created_at",
        "subscription",
        ["account_id", "created_at"],
        unique=False,
    )
    op.create_index("ix_subscription_started_at", "subscription", ["started_at"], unique=False)
    op.create_table(
        "invoice_attempt",
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payment_method", sa.String(length=10), nullable=True),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("decline_code", sa.String(length=50), nullable=True),
        sa.Column("failure_code", sa.String(length=50), nullable=True),
        sa.Column("card_brand", sa.String(length=20), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("gateway_charge_id", sa.String(length=200), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "outcome IN ('pending', 'succeeded', 'declined', 'failed')",
            name=op.f("ck_invoice_attempt_outcome"),
        ),
        sa.CheckConstraint(
            "payment_method IS NULL OR payment_method IN ('balance', 'card')",
            name=op.f("ck_invoice_attempt_payment_method"),
        ),
        sa.CheckConstraint("number > 0", name=op.f("ck_invoice_attempt_number_positive")),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_invoice_attempt_invoice_id_invoice"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("invoice_id", "number", name=op.f("pk_invoice_attempt")),
    )
    op.create_index(
        "ix_invoice_attempt_pending",
        "invoice_attempt",
        ["created_at"],
        unique=False,
        postgresql_where="outcome = 'pending'",
    )
    op.create_table(
        "invoice_line",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("invoice_id", sa.String(length=40), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("description", sa.String(length=300), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name=op.f("ck_invoice_line_amount_positive")),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoice.id"],
            name=op.f("fk_invoice_line_invoice_id_invoice"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["plan.id"], name=op.f("fk_invoice_line_plan_id_plan")
        ),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscription.id"],
            name=op.f("fk_invoice_line_subscription_id_subscription"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_line")),
        sa.UniqueConstraint(
            "invoice_id", "subscription_id", name="uq_invoice_line_invoice_id_subscription_id"
        ),
    )
    op.add_column("ledger_entry", sa.Column("invoice_id", sa.String(length=40), nullable=True))
    op.create_index(
        "uq_ledger_entry_invoice_once",
        "ledger_entry",
        ["invoice_id"],
        unique=True,
        postgresql_where="invoice_id IS NOT NULL",
    )
    _set_ledger_checks(_LEDGER_CHECKS_0004)
    plan = sa.table(
        "plan",
        sa.column("id", sa.String),
        sa.column("name", sa.String),
        sa.column("monthly_price_cents", sa.BigInteger),
        sa.column("position", sa.Integer),
    )
    op.bulk_insert(
        plan,
        [
            {
                "id": "cloud_small",
                "name": "Cloud server, small (2 vCPU, 4 GB)",
                "monthly_price_cents": 2_000,
                "position": 1,
            },
            {
                "id": "cloud_large",
                "name": "Cloud server, large (8 vCPU, 32 GB)",
                "monthly_price_cents": 8_000,
                "position": 2,
            },
            {
                "id": "support",
                "name": "Support plan (business hours, 4 h response)",
                "monthly_price_cents": 5_000,
                "position": 3,
            },
        ],
    )


def downgrade() -> None:
    # Refused while the ledger holds invoice debits: history is not rewritten.
    _set_ledger_checks(_LEDGER_CHECKS_0002)
    op.drop_index(
        "uq_ledger_entry_invoice_once",
        table_name="ledger_entry",
        postgresql_where="invoice_id IS NOT NULL",
    )
    op.drop_column("ledger_entry", "invoice_id")
    op.drop_table("invoice_line")
    op.drop_index(
        "ix_invoice_attempt_pending",
        table_name="invoice_attempt",
        postgresql_where="outcome = 'pending'",
    )
    op.drop_table("invoice_attempt")
    op.drop_index("ix_subscription_started_at", table_name="subscription")
    op.drop_index("ix_subscription_account_id_created_at", table_name="subscription")
    op.drop_table("subscription")
    op.drop_index("ix_invoice_due", table_name="invoice", postgresql_where="status = 'open'")
    op.drop_index("ix_invoice_account_id_created_at", table_name="invoice")
    op.drop_table("invoice")
    op.drop_table("plan")
