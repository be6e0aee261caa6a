"""subscriptions billed monthly in arrears (SPEC §11): canceling ends one at once

`cancel_at_period_end` goes: DELETE now ends a subscription at that moment, so `canceled_at`
and `ended_at` are set together (one canceled at period end before keeps its `ended_at`, the
1st after its cancellation, and stays active until then).

`billed_from` is the first moment of a subscription's time that is billed. For the ones made
from now on it is `started_at`. For the ones made while billing was in advance it is the 1st
after the month they started in: the rest of that month was free then, and must not be billed
now. Every month since was invoiced in advance on its 1st, and the arrears run makes no
second invoice for an account and month (uq_invoice_account_id_period_start): a month
already invoiced in advance is skipped, so nothing is billed twice, and the first month billed
in arrears is the first one with no invoice yet.

Revision ID: 0006
Revises: 0005
Created: 2026-12-01 09:52:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENDED_WHEN_CANCELED_0004 = "cancel_at_period_end = (ended_at IS NOT NULL)"
_ENDED_WHEN_CANCELED_0006 = "(canceled_at IS NULL) = (ended_at IS NULL)"


def upgrade() -> None:
    op.add_column("subscription", sa.Column("billed_from", sa.DateTime(timezone=True)))
    op.execute(
        "UPDATE subscription SET billed_from ="
        " (date_trunc('month', started_at AT TIME ZONE 'UTC') + interval '1 month')"
        " AT TIME ZONE 'UTC'"
    )
    op.alter_column("subscription", "billed_from", nullable=False)
    op.drop_constraint(op.f("ck_subscription_ended_when_canceled"), "subscription", type_="check")
    op.drop_column("subscription", "cancel_at_period_end")
    op.create_check_constraint(
        op.f("ck_subscription_ended_when_canceled"), "subscription", _ENDED_WHEN_CANCELED_0006
    )
    op.create_check_constraint(
        op.f("ck_subscription_ended_after_start"), "subscription", "ended_at >= started_at"
    )
    op.create_check_constraint(
        op.f("ck_subscription_billed_after_start"), "subscription", "billed_from >= started_at"
    )
    op.drop_index("ix_subscription_started_at", table_name="subscription")
    op.create_index("ix_subscription_billed_from", "subscription", ["billed_from"], unique=False)


def downgrade() -> None:
    # A subscription ended at once reads back as canceled at period end with its ended_at.
    op.drop_index("ix_subscription_billed_from", table_name="subscription")
    op.create_index("ix_subscription_started_at", "subscription", ["started_at"], unique=False)
    op.drop_constraint(op.f("ck_subscription_billed_after_start"), "subscription", type_="check")
    op.drop_constraint(op.f("ck_subscription_ended_after_start"), "subscription", type_="check")
    op.drop_constraint(op.f("ck_subscription_ended_when_canceled"), "subscription", type_="check")
    op.add_column(
        "subscription",
        sa.Column("cancel_at_period_end", sa.Boolean(), server_default="false", nullable=False),
    )
    op.execute("UPDATE subscription SET cancel_at_period_end = (ended_at IS NOT NULL)")
    op.create_check_constraint(
        op.f("ck_subscription_ended_when_canceled"), "subscription", _ENDED_WHEN_CANCELED_0004
    )
    op.drop_column("subscription", "billed_from")
