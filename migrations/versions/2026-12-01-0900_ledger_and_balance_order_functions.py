"""the ledger as one database function, and the balance order in one statement

`post_ledger_entry` is now the only code that moves a balance: every credit and debit (the
service's, an operator's, an invoice's, and the balance order below) calls it. A debit that
crosses the low-balance threshold queues its notices in the same transaction.

`place_balance_order` is POST /v1/orders paid from the balance in one statement: the
idempotency key with its answer, the order, and the debit with its ledger entry, committed
together, or nothing at all.

Revision ID: 0005
Revises: 0004
Created: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_QUEUE_LOW_BALANCE_NOTICE = """
CREATE FUNCTION queue_low_balance_notice(
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
    WHERE a.id = p_account_id
$$
"""

_POST_LEDGER_ENTRY = """
CREATE FUNCTION post_ledger_entry(
    p_entry_id varchar, p_account_id varchar, p_type varchar, p_amount_cents bigint,
    p_description varchar, p_deposit_id varchar DEFAULT NULL, p_order_id varchar DEFAULT NULL,
    p_invoice_id varchar DEFAULT NULL
) RETURNS TABLE (entry_id varchar, seq bigint, balance_after_cents bigint,
                 created_at timestamptz)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_balance bigint;
    v_seq bigint;
    v_threshold bigint;
BEGIN
    -- The balance row is the lock: concurrent postings to one account queue on it, each
    -- sees the balance the one before left, and the entry takes the next seq.
    IF p_amount_cents > 0 THEN
        INSERT INTO account_balance AS b (account_id, balance_cents, last_entry_seq)
        VALUES (p_account_id, p_amount_cents, 1)
        ON CONFLICT (account_id) DO UPDATE
            SET balance_cents = b.balance_cents + EXCLUDED.balance_cents,
                last_entry_seq = b.last_entry_seq + 1
        RETURNING b.balance_cents, b.last_entry_seq INTO v_balance, v_seq;
    ELSE
        -- A debit is conditional: too little money writes nothing and returns no row.
        UPDATE account_balance AS b
        SET balance_cents = b.balance_cents + p_amount_cents,
            last_entry_seq = b.last_entry_seq + 1
        WHERE b.account_id = p_account_id AND b.balance_cents + p_amount_cents >= 0
        RETURNING b.balance_cents, b.last_entry_seq INTO v_balance, v_seq;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY
    INSERT INTO ledger_entry AS e (id, account_id, seq, type, amount_cents,
                                   balance_after_cents, deposit_id, order_id, invoice_id,
                                   description)
    VALUES (p_entry_id, p_account_id, v_seq, p_type, p_amount_cents, v_balance, p_deposit_id,
            p_order_id, p_invoice_id, p_description)
    RETURNING e.id, e.seq, e.balance_after_cents, e.created_at;
    IF p_amount_cents < 0 THEN
        SELECT s.low_balance_threshold_cents INTO v_threshold
        FROM finance_settings s WHERE s.account_id = p_account_id;
        -- From at-or-above the threshold to below it: a crossing, noticed once.
        IF v_balance - p_amount_cents >= v_threshold AND v_balance < v_threshold THEN
            PERFORM queue_low_balance_notice(p_account_id, v_balance, v_threshold);
        END IF;
    END IF;
END
$$
"""

_PLACE_BALANCE_ORDER = """
CREATE FUNCTION place_balance_order(
    p_account_id varchar, p_key varchar, p_fingerprint varchar, p_key_held boolean,
    p_order_id varchar, p_entry_id varchar, p_product_id varchar, p_common_name varchar,
    p_sans varchar[], p_validity_years integer, p_amount_cents bigint,
    p_requested_method varchar, p_description varchar, p_created_at timestamptz,
    p_answer bytea, p_answer_type varchar
) RETURNS varchar LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_settings finance_settings%ROWTYPE;
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
    PERFORM 1 FROM post_ledger_entry(p_entry_id, p_account_id, 'order', -p_amount_cents,
                                     p_description, NULL, p_order_id, NULL);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'insufficient funds' USING ERRCODE = 'BL402';
    END IF;
    RETURN 'paid';
END
$$
"""


def upgrade() -> None:
    op.execute(_QUEUE_LOW_BALANCE_NOTICE)
    op.execute(_POST_LEDGER_ENTRY)
    op.execute(_PLACE_BALANCE_ORDER)


def downgrade() -> None:
    op.execute("DROP FUNCTION place_balance_order")
    op.execute("DROP FUNCTION post_ledger_entry")
    op.execute("DROP FUNCTION queue_low_balance_notice")
