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

_PLACE_BALANCE_ORDER = """
CREATE FUNCTION place_balance_order(
    p_account_id varchar, p_key varchar, p_fingerprint varchar, p_key_held boolean,
    p_order_id varchar, p_entry_id varchar, p_product_id varchar, p_common_name varchar,
    p_sans varchar[], p_validity_years integer, p_amount_cents bigint,
    p_requested_method varchar, p_description varchar, p_created_at timestamptz,
    p_answer bytea, p_answer_type varchar, p_refusal bytea, p_refusal_type varchar
) RETURNS varchar LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_settings finance_settings%ROWTYPE;
    v_event_id varchar;
    v_event_created_at timestamptz;
BEGIN
    -- Only the plain case is decided here: paid from the balance, requested or the default,
    -- and enabled (no settings row: a new account, balance payments off). Anything else is
    -- 'not_balance', for the service's own rules to answer.
    SELECT * INTO v_settings FROM finance_settings WHERE account_id = p_account_id;
    IF COALESCE(p_requested_method, v_settings.default_payment_method) IS DISTINCT FROM
           'balance'
       OR NOT COALESCE(v_settings.balance_payments_enabled, false) THEN
        RETURN 'not_balance';
    END IF;
    -- The key with its answer: a second request with it waits for this one to commit.
    IF p_key_held THEN
        UPDATE idempotency_key
        SET response_status = 201, response_body = p_answer,
            response_content_type = p_answer_type
        WHERE account_id = p_account_id AND key = p_key;
    ELSE
        INSERT INTO idempotency_key (account_id, key, fingerprint, response_status,
                                     response_body, response_content_type)
        VALUES (p_account_id, p_key, p_fingerprint, 201, p_answer, p_answer_type)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RETURN 'key_taken';
        END IF;
    END IF;
    INSERT INTO certificate_order (id, account_id, idempotency_key, product_id, common_name,
                                   sans, validity_years, amount_cents, payment_method, status,
                                   created_at)
    VALUES (p_order_id, p_account_id, p_key, p_product_id, p_common_name, p_sans,
            p_validity_years, p_amount_cents, 'balance', 'paid', p_created_at)
    ON CONFLICT ON CONSTRAINT uq_certificate_order_account_id_key DO NOTHING;
    -- Raised, not returned: the statement then undoes the key and the order with it.
    IF NOT FOUND THEN
        RAISE EXCEPTION 'an order was made under this key' USING ERRCODE = 'BL409';
    END IF;
    -- order.paid, with the order exactly as the API answers it, stored before the debit:
    -- from the debit on, every other debit of the account waits for this statement.
    SELECT event_id, event_created_at INTO v_event_id, v_event_created_at
    FROM store_webhook_event(p_account_id, 'order.paid', convert_from(p_answer, 'UTF8')::jsonb);
    PERFORM 1 FROM post_ledger_entry(p_entry_id, p_account_id, 'order', -p_amount_cents,
                                     p_description, NULL, p_order_id, NULL);
    IF NOT FOUND THEN
        -- Too little money: the order and its event go, the key stays with its refusal.
        DELETE FROM webhook_event WHERE id = v_event_id;
        DELETE FROM certificate_order WHERE id = p_order_id;
        UPDATE idempotency_key
        SET response_status = 402, response_body = p_refusal,
            response_content_type = p_refusal_type
        WHERE account_id = p_account_id AND key = p_key;
        RETURN 'insufficient_funds';
    END IF;
    PERFORM fan_out_webhook_event(v_event_id, p_account_id, 'order.paid', v_event_created_at);
    RETURN 'paid';
END
$$
"""


def _revision_0009() -> ModuleType:
    return revision_module("2026-12-01-1300_balance_order_keeps_its_refusal.py")


def _revision_0010() -> ModuleType:
    return revision_module("2026-12-01-1315_queue_webhook_event_in_plpgsql.py")


def upgrade() -> None:
    op.execute(_STORE_WEBHOOK_EVENT)
    op.execute(_FAN_OUT_WEBHOOK_EVENT)
    op.execute(_QUEUE_WEBHOOK_EVENT)
    op.execute("DROP FUNCTION place_balance_order")
    op.execute(_PLACE_BALANCE_ORDER)


def downgrade() -> None:
    op.execute("DROP FUNCTION place_balance_order")
    op.execute(_revision_0009().place_balance_order())
    op.execute(_revision_0010()._QUEUE_WEBHOOK_EVENT)
    op.execute("DROP FUNCTION fan_out_webhook_event")
    op.execute("DROP FUNCTION store_webhook_event")
