"""automatic top-up (SPEC §14): the rule on finance_settings, deposits with their source

The rule is four columns of `finance_settings` (threshold, amount, monthly limit: all set or
none) and its status (`active`, or `suspended` with its reason).

`queue_auto_top_up(account, before, after)` runs in every debit's transaction, called by
`post_ledger_entry` while the debit holds the account's balance row. When the debit takes
the balance from at-or-above the threshold to below it, it makes one pending automatic
deposit and an outbox message `auto_top_up` for the worker to charge. Every automatic
deposit is made here and nowhere else, under that row lock, so the checks below see every
other one:
- at most one pending per account (also a unique index: `uq_deposit_one_pending_auto_top_up`);
- the month's automatic deposits, pending and succeeded, by the UTC month they were made,
  never add up to more than the monthly limit;
- no card on file suspends the rule (`no_card_on_file`) instead.

`suspend_auto_top_up(account, reason)` suspends an active rule and queues one email per
notification address (the worker writes it: app/finance/notifications.py).

`charge_started_at` is when the worker began charging an automatic deposit: the reconciler
asks the gateway only about charges that were begun.

Revision ID: 0008
Revises: 0007
Created: 2026-12-01 12:00:00
"""

from collections.abc import Sequence
from types import ModuleType

import sqlalchemy as sa
from alembic import op

from migrations.history import revision_module

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0005() -> ModuleType:
    """The migration that wrote post_ledger_entry, for its text."""
    return revision_module("2026-12-01-0900_ledger_and_balance_order_functions.py")


_SUSPEND_AUTO_TOP_UP = """
CREATE FUNCTION suspend_auto_top_up(p_account_id varchar, p_reason varchar)
RETURNS void LANGUAGE sql AS $$
    WITH suspended AS (
        UPDATE finance_settings
        SET auto_top_up_status = 'suspended', auto_top_up_suspended_reason = p_reason
        WHERE account_id = p_account_id AND auto_top_up_status = 'active'
        RETURNING account_id, notification_emails
    )
    INSERT INTO outbox_message (topic, payload)
    SELECT 'email', jsonb_build_object(
        'kind', 'auto_top_up_suspended', 'account_id', a.id, 'account_name', a.name,
        'to', address, 'reason', p_reason)
    FROM suspended s
    JOIN account a ON a.id = s.account_id
    CROSS JOIN LATERAL unnest(COALESCE(s.notification_emails, ARRAY[a.email]::varchar[]))
        AS address
$$
"""

_QUEUE_AUTO_TOP_UP = """
CREATE FUNCTION queue_auto_top_up(
    p_account_id varchar, p_before_cents bigint, p_after_cents bigint
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_rule finance_settings%ROWTYPE;
    v_card card%ROWTYPE;
    v_month_cents bigint;
    v_deposit_id varchar;
BEGIN
    SELECT * INTO v_rule FROM finance_settings WHERE account_id = p_account_id;
    IF v_rule.auto_top_up_status IS DISTINCT FROM 'active'
       OR NOT (p_before_cents >= v_rule.auto_top_up_threshold_cents
               AND p_after_cents < v_rule.auto_top_up_threshold_cents) THEN
        RETURN;
    END IF;
    -- The caller holds the account's balance row: no other automatic deposit is being made.
    PERFORM 1 FROM deposit
    WHERE account_id = p_account_id AND source = 'auto_top_up' AND status = 'pending';
    IF FOUND THEN
        RETURN;
    END IF;
    SELECT COALESCE(sum(amount_cents), 0) INTO v_month_cents FROM deposit
    WHERE account_id = p_account_id AND source = 'auto_top_up'
      AND status IN ('pending', 'succeeded')
      AND created_at >= date_trunc('month', clock_timestamp() AT TIME ZONE 'UTC')
                        AT TIME ZONE 'UTC';
    IF v_month_cents + v_rule.auto_top_up_amount_cents > v_rule.auto_top_up_monthly_limit_cents
    THEN
        RETURN;
    END IF;
    SELECT * INTO v_card FROM card WHERE account_id = p_account_id;
    IF NOT FOUND THEN
        PERFORM suspend_auto_top_up(p_account_id, 'no_card_on_file');
        RETURN;
    END IF;
    v_deposit_id := new_id('dep');
    INSERT INTO deposit (id, account_id, idempotency_key, amount_cents, status, card_brand,
                         card_last4, source)
    VALUES (v_deposit_id, p_account_id, 'auto_top_up:' || v_deposit_id,
            v_rule.auto_top_up_amount_cents, 'pending', v_card.brand, v_card.last4,
            'auto_top_up');
    INSERT INTO outbox_message (topic, payload)
    VALUES ('auto_top_up', jsonb_build_object('deposit_id', v_deposit_id));
END
$$
"""

# post_ledger_entry: every debit also offers itself to the automatic top-up.
_LOW_BALANCE_CALL = (
    "            PERFORM queue_low_balance_notice(p_account_id, v_balance, v_threshold);\n"
    "        END IF;\n"
)
_AUTO_TOP_UP_CALL = (
    "        PERFORM queue_auto_top_up(p_account_id, v_balance - p_amount_cents, v_balance);\n"
)


def _post_ledger_entry(with_auto_top_up: bool) -> str:
    text: str = _revision_0005()._POST_LEDGER_ENTRY
    assert text.count(_LOW_BALANCE_CALL) == 1
    if with_auto_top_up:
        text = text.replace(_LOW_BALANCE_CALL, _LOW_BALANCE_CALL + _AUTO_TOP_UP_CALL)
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


# A reason exactly when suspended.
_SUSPENSION = (
    "(auto_top_up_suspended_reason IS NULL) = (auto_top_up_status IS DISTINCT FROM 'suspended')"
)
_RULE_COLUMNS = (
    "auto_top_up_threshold_cents",
    "auto_top_up_amount_cents",
    "auto_top_up_monthly_limit_cents",
    "auto_top_up_status",
)


def upgrade() -> None:
    for column in _RULE_COLUMNS[:3]:
        op.add_column("finance_settings", sa.Column(column, sa.BigInteger(), nullable=True))
    op.add_column(
        "finance_settings", sa.Column("auto_top_up_status", sa.String(length=20), nullable=True)
    )
    op.add_column(
        "finance_settings",
        sa.Column("auto_top_up_suspended_reason", sa.String(length=40), nullable=True),
    )
    all_or_none = " AND ".join(f"{c} IS NULL" for c in _RULE_COLUMNS)
    all_set = " AND ".join(f"{c} IS NOT NULL" for c in _RULE_COLUMNS)
    op.create_check_constraint(
        op.f("ck_finance_settings_auto_top_up_rule"),
        "finance_settings",
        f"({all_or_none}) OR ({all_set} AND auto_top_up_threshold_cents >= 0"
        " AND auto_top_up_amount_cents > 0"
        " AND auto_top_up_monthly_limit_cents >= auto_top_up_amount_cents)",
    )
    op.create_check_constraint(
        op.f("ck_finance_settings_auto_top_up_status"),
        "finance_settings",
        "auto_top_up_status IN ('active', 'suspended')",
    )
    op.create_check_constraint(
        op.f("ck_finance_settings_auto_top_up_suspended_reason"),
        "finance_settings",
        "auto_top_up_suspended_reason IN ('card_declined', 'no_card_on_file')",
    )
    op.create_check_constraint(
        op.f("ck_finance_settings_auto_top_up_suspension"),
        "finance_settings",
        _SUSPENSION,
    )
    op.add_column(
        "deposit",
        sa.Column("source", sa.String(length=20), server_default="api", nullable=False),
    )
    op.add_column(
        "deposit", sa.Column("charge_started_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_deposit_source"), "deposit", "source IN ('api', 'auto_top_up')"
    )
    op.create_index(
        "uq_deposit_one_pending_auto_top_up",
        "deposit",
        ["account_id"],
        unique=True,
        postgresql_where="source = 'auto_top_up' AND status = 'pending'",
    )
    op.execute(_SUSPEND_AUTO_TOP_UP)
    op.execute(_QUEUE_AUTO_TOP_UP)
    op.execute(_post_ledger_entry(with_auto_top_up=True))


def downgrade() -> None:
    op.execute(_post_ledger_entry(with_auto_top_up=False))
    op.execute("DROP FUNCTION queue_auto_top_up")
    op.execute("DROP FUNCTION suspend_auto_top_up")
    op.execute("DELETE FROM outbox_message WHERE topic = 'auto_top_up'")
    op.drop_index("uq_deposit_one_pending_auto_top_up", table_name="deposit")
    op.drop_constraint(op.f("ck_deposit_source"), "deposit")
    op.drop_column("deposit", "charge_started_at")
    op.drop_column("deposit", "source")
    for name in (
        "auto_top_up_suspension",
        "auto_top_up_suspended_reason",
        "auto_top_up_status",
        "auto_top_up_rule",
    ):
        op.drop_constraint(op.f(f"ck_finance_settings_{name}"), "finance_settings")
    op.drop_column("finance_settings", "auto_top_up_suspended_reason")
    for column in reversed(_RULE_COLUMNS):
        op.drop_column("finance_settings", column)
