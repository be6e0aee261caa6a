"""The only code that moves a balance: one statement updates the balance row and appends the
ledger entry it returns, inside the caller's short transaction. A debit that crosses the
low-balance threshold queues its notice in that same transaction.

A debit is conditional (`WHERE balance_cents + amount >= 0`): when the balance is too low no
row comes back and nothing is written. The balance row's lock is held only until the
caller commits, never across a gateway call.
"""

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from app.finance.notifications import crossed_threshold, queue_low_balance_notice
from app.ids import new_id

_CREDIT = """
    WITH moved AS (
        INSERT INTO account_balance (account_id, balance_cents, last_entry_seq)
        VALUES ($2, $4, 1)
        ON CONFLICT (account_id) DO UPDATE
            SET balance_cents = account_balance.balance_cents + EXCLUDED.balance_cents,
                last_entry_seq = account_balance.last_entry_seq + 1
        RETURNING balance_cents, last_entry_seq
    )
    INSERT INTO ledger_entry (id, account_id, seq, type, amount_cents, balance_after_cents,
                              deposit_id, order_id, invoice_id, description)
    SELECT $1, $2, last_entry_seq, $3, $4, balance_cents, $5, $6, $8, $7
    FROM moved
    RETURNING id, seq, balance_after_cents, created_at
"""

_DEBIT = """
    WITH moved AS (
        UPDATE account_balance
        SET balance_cents = balance_cents + $4, last_entry_seq = last_entry_seq + 1
        WHERE account_id = $2 AND balance_cents + $4 >= 0
        RETURNING balance_cents, last_entry_seq
    )
    INSERT INTO ledger_entry (id, account_id, seq, type, amount_cents, balance_after_cents,
                              deposit_id, order_id, invoice_id, description)
    SELECT $1, $2, last_entry_seq, $3, $4, balance_cents, $5, $6, $8, $7
    FROM moved
    RETURNING id, seq, balance_after_cents, created_at,
        (SELECT low_balance_threshold_cents FROM finance_settings
         WHERE account_id = $2) AS threshold_cents
"""


@dataclass(frozen=True)
class Posting:
    entry_id: str
    seq: int
    amount_cents: int
    balance_after_cents: int
    created_at: datetime

    @property
    def balance_before_cents(self) -> int:
        return self.balance_after_cents - self.amount_cents


async def post_entry(
    conn: asyncpg.Connection,
    *,
    account_id: str,
    type: str,
    amount_cents: int,
    description: str,
    deposit_id: str | None = None,
    order_id: str | None = None,
    invoice_id: str | None = None,
) -> Posting | None:
    """Move the balance by a signed amount and append its entry, inside the transaction open
    on `conn` (`driver_connection(session)` from an ORM transaction). A debit that would take
    the balance below zero writes nothing and returns None."""
    assert amount_cents != 0
    row = await conn.fetchrow(
        _CREDIT if amount_cents > 0 else _DEBIT,
        new_id("txn"),
        account_id,
        type,
        amount_cents,
        deposit_id,
        order_id,
        description,
        invoice_id,
    )
    if row is None:
        return None
    if amount_cents < 0:
        before = row["balance_after_cents"] - amount_cents
        if crossed_threshold(before, row["balance_after_cents"], row["threshold_cents"]):
            await queue_low_balance_notice(
                conn, account_id, row["balance_after_cents"], row["threshold_cents"]
            )
    return Posting(
        entry_id=row["id"],
        seq=row["seq"],
        amount_cents=amount_cents,
        balance_after_cents=row["balance_after_cents"],
        created_at=row["created_at"],
    )
