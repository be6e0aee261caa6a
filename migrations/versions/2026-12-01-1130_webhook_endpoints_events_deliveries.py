"""webhooks (SPEC §12): endpoints, events and delivery attempts, events queued by the database

`queue_webhook_event(account, type, object)` is the one way an event is made: it stores the
event and, for every enabled endpoint of the account subscribed to its type, a pending first
attempt and an outbox message `webhook` that the worker delivers. Called in the transaction
of the change it reports, so a rolled-back change leaves no event and a committed one loses
none.

Two database functions now raise events themselves: `place_balance_order` (order.paid, with
the order exactly as the API answered it) and `queue_low_balance_notice` (balance.low, on
the same crossing as the §10 notice).

`new_id(prefix)` makes ids in the database like app.kit.ids does in Python: the prefix and 26
lower-case base32 characters (the 122 random bits of gen_random_uuid()).

Revision ID: 0007
Revises: 0006
Created: 2026-12-01 11:30:00
"""

from collections.abc import Sequence
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from migrations.history import revision_module

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0005() -> ModuleType:
    """The migration that wrote the functions changed here, for their text."""
    return revision_module("2026-12-01-0900_ledger_and_balance_order_functions.py")


_NEW_ID = """
CREATE FUNCTION new_id(p_prefix varchar) RETURNS varchar LANGUAGE sql VOLATILE AS $$
    SELECT p_prefix || '_' || string_agg(
        substr('abcdefghijklmnopqrstuvwxyz234567',
               substring(bits FROM i * 5 + 1 FOR 5)::integer + 1, 1), '' ORDER BY i)
    FROM (SELECT (('x' || encode(uuid_send(gen_random_uuid()), 'hex'))::bit(128) || B'00')
                 AS bits) AS random,
         generate_series(0, 25) AS i
$$
"""

_FORMAT_AMOUNT = """
CREATE FUNCTION format_amount(p_cents bigint) RETURNS varchar LANGUAGE sql IMMUTABLE AS $$
    -- As app.kit.money.format_amount: "500.00".
    SELECT CASE WHEN p_cents < 0 THEN '-' ELSE '' END || (abs(p_cents) / 100)::text || '.'
           || lpad((abs(p_cents) % 100)::text, 2, '0')
$$
"""

_QUEUE_WEBHOOK_EVENT = """
CREATE FUNCTION queue_webhook_event(
    p_account_id varchar, p_type varchar, p_object jsonb
) RETURNS varchar LANGUAGE sql AS $$
    WITH event AS (
        INSERT INTO webhook_event (account_id, type, data)
        VALUES (p_account_id, p_type, jsonb_build_object('object', p_object))
        RETURNING id, created_at
    ), first_attempt AS (
        INSERT INTO webhook_delivery (endpoint_id, event_id, event_type, attempt, status,
                                      next_attempt_at)
        SELECT endpoint.id, event.id, p_type, 1, 'pending', event.created_at
        FROM webhook_endpoint endpoint CROSS JOIN event
        WHERE endpoint.account_id = p_account_id AND endpoint.status = 'enabled'
          AND p_type = ANY (endpoint.events)
        RETURNING endpoint_id, event_id
    ), message AS (
        INSERT INTO outbox_message (topic, payload)
        SELECT 'webhook', jsonb_build_object('endpoint_id', endpoint_id, 'event_id', event_id)
        FROM first_attempt
    )
    SELECT id FROM event
$$
"""

# The balance as GET /v1/finance/balance answers it, at the crossing.
_QUEUE_LOW_BALANCE_NOTICE = """
CREATE OR REPLACE FUNCTION queue_low_balance_notice(
    p_account_id varchar, p_balance_cents bigint, p_threshold_cents bigint
) RETURNS void LANGUAGE sql AS $$
    -- One email per notification address (none set: the account's own email); the worker
    -- writes the text (app/finance/notifications.py).
    INSERT INTO outbox_message (topic, payload)
    SELECT 'email', jsonb_build_object(
        'kind', 'low_balance', 'account_id', a.id, 'account_name', a.name, 'to', address,
        'balance_cents', p_balance_cents, 'threshold_cents', p_threshold_cents)
    FROM account a
    LEFT JOIN finance_settings s ON s.account_id = a.id
    CROSS JOIN LATERAL unnest(COALESCE(s.notification_emails, ARRAY[a.email]::varchar[]))
        AS address
    WHERE a.id = p_account_id;
    SELECT queue_webhook_event(p_account_id, 'balance.low', jsonb_build_object(
        'balance', format_amount(p_balance_cents), 'currency', 'USD',
        'low_balance_threshold', format_amount(p_threshold_cents),
        'below_threshold', p_balance_cents < p_threshold_cents));
$$
"""

_PAID = "    RETURN 'paid';"
_ORDER_PAID_EVENT = (
    "    -- order.paid, with the order exactly as the API answers it.\n"
    "    PERFORM queue_webhook_event(p_account_id, 'order.paid',\n"
    "                                convert_from(p_answer, 'UTF8')::jsonb);\n"
)


def _place_balance_order(with_event: bool) -> str:
    text: str = _revision_0005()._PLACE_BALANCE_ORDER
    assert text.count(_PAID) == 1
    if with_event:
        text = text.replace(_PAID, _ORDER_PAID_EVENT + _PAID)
    return text.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


_OUTBOX_STATUS_0003 = "status IN ('pending', 'delivered', 'logged', 'dead')"
_OUTBOX_STATUS_0007 = "status IN ('pending', 'delivered', 'logged', 'dead', 'dropped')"
_EVENT_TYPES = (
    "type IN ('deposit.succeeded', 'deposit.failed', 'order.paid', 'order.canceled', "
    "'balance.low', 'invoice.paid', 'invoice.payment_failed')"
)


def upgrade() -> None:
    op.execute(_NEW_ID)
    op.execute(_FORMAT_AMOUNT)
    op.create_table(
        "webhook_endpoint",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("events", postgresql.ARRAY(sa.String(length=40)), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("secret_seed", sa.LargeBinary(), nullable=False),
        sa.Column("previous_secret_seed", sa.LargeBinary(), nullable=True),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failing_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('enabled', 'disabled')", name=op.f("ck_webhook_endpoint_status")
        ),
        sa.CheckConstraint("cardinality(events) > 0", name=op.f("ck_webhook_endpoint_events")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_webhook_endpoint_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoint")),
    )
    op.create_index(
        "ix_webhook_endpoint_account_id_created_at",
        "webhook_endpoint",
        ["account_id", "created_at", "id"],
    )
    op.create_table(
        "webhook_event",
        sa.Column(
            "id", sa.String(length=40), server_default=sa.text("new_id('evt')"), nullable=False
        ),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.CheckConstraint(_EVENT_TYPES, name=op.f("ck_webhook_event_type")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
            name=op.f("fk_webhook_event_account_id_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_event")),
    )
    op.create_index(
        "ix_webhook_event_account_id_created_at",
        "webhook_event",
        ["account_id", "created_at", "id"],
    )
    op.create_index("ix_webhook_event_created_at", "webhook_event", ["created_at"])
    op.create_table(
        "webhook_delivery",
        sa.Column(
            "id", sa.String(length=40), server_default=sa.text("new_id('whd')"), nullable=False
        ),
        sa.Column("endpoint_id", sa.String(length=40), nullable=False),
        sa.Column("event_id", sa.String(length=40), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("response_status", sa.SmallInteger(), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed')", name=op.f("ck_webhook_delivery_status")
        ),
        sa.CheckConstraint("event_" + _EVENT_TYPES, name=op.f("ck_webhook_delivery_event_type")),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoint.id"],
            name=op.f("fk_webhook_delivery_endpoint_id_webhook_endpoint"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["webhook_event.id"],
            name=op.f("fk_webhook_delivery_event_id_webhook_event"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
        sa.UniqueConstraint(
            "endpoint_id", "event_id", "attempt", name=op.f("uq_webhook_delivery_endpoint_id")
        ),
    )
    op.create_index(
        "uq_webhook_delivery_one_pending",
        "webhook_delivery",
        ["endpoint_id", "event_id"],
        unique=True,
        postgresql_where="status = 'pending'",
    )
    op.create_index(
        "ix_webhook_delivery_endpoint_id_created_at",
        "webhook_delivery",
        ["endpoint_id", "created_at", "id"],
    )
    op.create_index("ix_webhook_delivery_event_id", "webhook_delivery", ["event_id"])
    op.create_index(
        "ix_webhook_delivery_due",
        "webhook_delivery",
        ["next_attempt_at"],
        postgresql_where="status = 'pending'",
    )
    op.drop_constraint("ck_outbox_message_status", "outbox_message")
    op.create_check_constraint(
        op.f("ck_outbox_message_status"), "outbox_message", _OUTBOX_STATUS_0007
    )
    op.execute(_QUEUE_WEBHOOK_EVENT)
    op.execute(_QUEUE_LOW_BALANCE_NOTICE)
    op.execute(_place_balance_order(with_event=True))


def downgrade() -> None:
    op.execute(_place_balance_order(with_event=False))
    op.execute(
        _revision_0005()._QUEUE_LOW_BALANCE_NOTICE.replace(
            "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
        )
    )
    op.execute("DROP FUNCTION queue_webhook_event")
    op.execute("DELETE FROM outbox_message WHERE topic = 'webhook'")
    op.drop_constraint("ck_outbox_message_status", "outbox_message")
    op.create_check_constraint(
        op.f("ck_outbox_message_status"), "outbox_message", _OUTBOX_STATUS_0003
    )
    op.drop_table("webhook_delivery")
    op.drop_table("webhook_event")
    op.drop_table("webhook_endpoint")
    op.execute("DROP FUNCTION format_amount")
    op.execute("DROP FUNCTION new_id")
