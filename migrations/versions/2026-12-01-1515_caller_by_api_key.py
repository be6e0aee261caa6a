"""caller_by_api_key(): the calling key and its account, `last_used_at` written only when due

The caller's statement for an API key was one query with a data-modifying CTE (the
`last_used_at` touch, once a minute). PostgreSQL set up that UPDATE on every execution,
even when it had no row to touch, which is nearly always: 70 µs per call, against 33 µs for
the plain read (pgbench, 10 statements per transaction). In PL/pgSQL the UPDATE runs only
when the key's `last_used_at` is stale: about 45 µs per call. Every request made with an
API key runs it. The same rows, answer and `last_used_at` rule as the statement it
replaces (app/auth/principal.py).

Revision ID: 0013
Revises: 0012
Created: 2026-12-01 15:15:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CALLER_BY_API_KEY = """
CREATE FUNCTION caller_by_api_key(p_digest varchar, p_resolution interval)
RETURNS TABLE (
    id varchar, account_id varchar, name varchar, role varchar, integration varchar,
    prefix varchar, created_at timestamptz, used_at timestamptz, a_name varchar,
    a_company_name varchar, a_email varchar, a_phone varchar, a_created_at timestamptz
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_key api_key%ROWTYPE;
BEGIN
    SELECT * INTO v_key FROM api_key k WHERE k.digest = p_digest AND k.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- Written at most once per p_resolution: a write on every read would cost more than
    -- the read.
    IF v_key.last_used_at IS NULL OR v_key.last_used_at < clock_timestamp() - p_resolution
    THEN
        UPDATE api_key k SET last_used_at = clock_timestamp() WHERE k.id = v_key.id
        RETURNING k.last_used_at INTO v_key.last_used_at;
    END IF;
    RETURN QUERY
    SELECT v_key.id, v_key.account_id, v_key.name, v_key.role, v_key.integration,
           v_key.prefix, v_key.created_at, v_key.last_used_at, a.name, a.company_name,
           a.email, a.phone, a.created_at
    FROM account a WHERE a.id = v_key.account_id;
END
$$
"""


def upgrade() -> None:
    op.execute(_CALLER_BY_API_KEY)


def downgrade() -> None:
    op.execute("DROP FUNCTION caller_by_api_key")
