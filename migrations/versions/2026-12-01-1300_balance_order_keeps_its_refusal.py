"""a balance order refused for want of funds keeps its key, with the 402, in its statement

Before, `place_balance_order` raised on insufficient funds, which undid the key with the
order, and the 402 was stored under the key just after, in a transaction of its own. A
second request with the same key, waiting on the first one's key, ran its own order in
between (and answered its own 402). Now the function undoes only the order, stores the
refusal under the key (the service renders it, as it renders the 201), and returns
'insufficient_funds': a request with the same key waits for that statement, then replays
the 402 (SPEC §8).

Revision ID: 0009
Revises: 0008
Created: 2026-12-01 13:00:00
"""

from collections.abc import Sequence
from types import ModuleType

from alembic import op

from migrations.history import revision_module

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _revision_0007() -> ModuleType:
    """The migration that wrote place_balance_order as it stands, for its text."""
    return revision_module("2026-12-01-1130_webhook_endpoints_events_deliveries.py")


_ANSWER_PARAMETERS = "    p_answer bytea, p_answer_type varchar\n"
_WITH_REFUSAL = (
    "    p_answer bytea, p_answer_type varchar, p_refusal bytea, p_refusal_type varchar\n"
)
_RAISED = (
    "    IF NOT FOUND THEN\n"
    "        RAISE EXCEPTION 'insufficient funds' USING ERRCODE = 'BL402';\n"
    "    END IF;\n"
)
_KEPT = """    IF NOT FOUND THEN
        -- Too little money: the order goes, the key stays with its refusal.
        DELETE FROM certificate_order WHERE id = p_order_id;
        UPDATE idempotency_key
        SET response_status = 402, response_body = p_refusal,
            response_content_type = p_refusal_type
        WHERE account_id = p_account_id AND key = p_key;
        RETURN 'insufficient_funds';
    END IF;
"""


def _place_balance_order_0007() -> str:
    text: str = _revision_0007()._place_balance_order(with_event=True)
    return text.replace("CREATE OR REPLACE FUNCTION", "CREATE FUNCTION", 1)


def place_balance_order() -> str:
    """The function as this migration writes it (CREATE FUNCTION), for later migrations."""
    text = _place_balance_order_0007()
    assert text.count(_ANSWER_PARAMETERS) == 1
    assert text.count(_RAISED) == 1
    return text.replace(_ANSWER_PARAMETERS, _WITH_REFUSAL).replace(_RAISED, _KEPT)


def upgrade() -> None:
    op.execute("DROP FUNCTION place_balance_order")
    op.execute(place_balance_order())


def downgrade() -> None:
    op.execute("DROP FUNCTION place_balance_order")
    op.execute(_place_balance_order_0007())
