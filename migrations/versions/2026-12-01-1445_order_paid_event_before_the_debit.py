"""a balance order stores its order.paid event before the debit, not while it holds the
account's balance row

Every debit of an account waits for its `account_balance` row, from the debit's UPDATE to
the commit. `place_balance_order` stored its `order.paid` event after the debit, so every
order of a busy account waited for the event insert of the order before it. The event is
now stored before the debit (and deleted with the order when the debit finds too little
money), and only its fan-out to subscribed endpoints, an index probe when there are none,
follows the debit. `queue_webhook_event` is the two steps in one, as before.
Measured on one hot account (32 connections): 710 -> 798 orders/s.

Revision ID: 0012
Revises: 0011
Created: 2026-12-01 14:45:00
"""

from collections.abc import Sequence
from types import ModuleType

from alembic import op

from migrations.history import revision_module

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STORE_WEBHOOK_EVENT = """
CREATE FUNCTION store_webhook_event(
    p_account_id varchar, p_type varchar, p_object jsonb,
    OUT event_id varchar, OUT event_created_at timestamptz
) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_event (account_id, type, data)
    VALUES (p_account_id, p_type, jsonb_build_object('object', p_object))
    RETURNING id, created_at INTO event_id, event_created_at;
END
$$
"""

_FAN_OUT_WEBHOOK_EVENT = """
CREATE FUNCTION fan_out_webhook_event(
    p_event_id varchar, p_account_id varchar, p_type varchar, p_created_at timestamptz
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    -- A first attempt and its outbox message per enabled endpoint subscribed to the type.
    WITH first_attempt AS (
        INSERT INTO webhook_delivery (endpoint_id, event_id, event_type, attempt, status,
                                      next_attempt_at)
        SELECT endpoint.id, p_event_id, p_type, 1, 'pending', p_created_at
        FROM webhook_endpoint endpoint
        WHERE endpoint.account_id = p_account_id AND endpoint.status = 'enabled'
          AND p_type = ANY (endpoint.events)
        RETURNING endpoint_id
    )
    INSERT INTO outbox_message (topic, payload)
    SELECT 'webhook', jsonb_build_object('endpoint_id', endpoint_id, 'event_id', p_event_id)
    FROM first_attempt;
END
$$
"""

_QUEUE_WEBHOOK_EVENT = """
CREATE OR REPLACE FUNCTION queue_webhook_event(
    p_account_id varchar, p_type varchar, p_object jsonb
) RETURNS varchar LANGUAGE plpgsql AS $$
DECLARE
    v_event_id varchar;
    v_created_at timestamptz;
BEGIN
    SELECT event_id, event_created_at INTO v_event_id, v_created_at
    FROM store_webhook_event(p_account_id, p_type, p_object);
    PERFORM fan_out_webhook_event(v_event_id, p_account_id, p_type, v_created_at);
    RETURN v_event_id;
END
$$
"""

# place_balance_order as migration 0009 left it, changed at three places.
_DECLARED = "    v_settings finance_settings%ROWTYPE;\n"
_WITH_EVENT = _DECLARED + "    v_event_id varchar;\n    v_event_created_at timestamptz;\n"
_EVENT_AFTER_THE_DEBIT = (
    "    -- order.paid, with the order exactly as the API answers it.\n"
    "    PERFORM queue_webhook_event(p_account_id, 'order.paid',\n"
    "                                convert_from(p_answer, 'UTF8')::jsonb);\n"
    "    RETURN 'paid';"
)
_FAN_OUT_AFTER_THE_DEBIT = (
    "    PERFORM fan_out_webhook_event(v_event_id, p_account_id, 'order.paid', "
    "v_event_created_at);\n"
    "    RETURN 'paid';"
)
_DEBIT = "    PERFORM 1 FROM post_ledger_entry("
_EVENT_BEFORE_THE_DEBIT = (
    "    -- order.paid, with the order exactly as the API answers it, stored before the debit:\n"
    "    -- from the debit on, every other debit of the account waits for this statement.\n"
    "    SELECT event_id, event_created_at INTO v_event_id, v_event_created_at\n"
    "    FROM store_webhook_event(p_account_id, 'order.paid', "
    "convert_from(p_answer, 'UTF8')::jsonb);\n"
)
_REFUSED = (
    "        -- Too little money: the order goes, the key stays with its refusal.\n"
    "        DELETE FROM certificate_order WHERE id = p_order_id;\n"
)
_REFUSED_WITH_EVENT = (
    "        -- Too little money: the order and its event go, the key stays with its refusal.\n"
    "        DELETE FROM webhook_event WHERE id = v_event_id;\n"
    "        DELETE FROM certificate_order WHERE id = p_order_id;\n"
)


def _place_balance_order() -> str:
    text = _revision_0009().place_balance_order()
    for old, new in (
        (_DECLARED, _WITH_EVENT),
        (_EVENT_AFTER_THE_DEBIT, _FAN_OUT_AFTER_THE_DEBIT),
        (_DEBIT, _EVENT_BEFORE_THE_DEBIT + _DEBIT),
        (_REFUSED, _REFUSED_WITH_EVENT),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def _revision_0009() -> ModuleType:
    return revision_module("2026-12-01-1300_balance_order_keeps_its_refusal.py")


def _revision_0010() -> ModuleType:
    return revision_module("2026-12-01-1315_queue_webhook_event_in_plpgsql.py")


def upgrade() -> None:
    op.execute(_STORE_WEBHOOK_EVENT)
    op.execute(_FAN_OUT_WEBHOOK_EVENT)
    op.execute(_QUEUE_WEBHOOK_EVENT)
    op.execute("DROP FUNCTION place_balance_order")
    op.execute(_place_balance_order())


def downgrade() -> None:
    op.execute("DROP FUNCTION place_balance_order")
    op.execute(_revision_0009().place_balance_order())
    op.execute(_revision_0010()._QUEUE_WEBHOOK_EVENT)
    op.execute("DROP FUNCTION fan_out_webhook_event")
    op.execute("DROP FUNCTION store_webhook_event")
