"""The ledger of the balance, as the services see it. The only code that moves a balance is
the database function `post_ledger_entry` (migration 0005): one call updates the balance row
and appends the entry, inside the caller's transaction; a debit that would take the balance
below zero writes nothing; a debit that crosses the low-balance threshold queues its notice
in the same transaction. The balance row's lock is held only until the caller commits,
never across a gateway call.
"""

from dataclasses import dataclass
from datetime import datetime

from app.finance.models import LedgerEntryType
from app.kit.db import UnitOfWork
from app.kit.ids import new_id

_POST = """
    SELECT entry_id, seq, balance_after_cents, created_at
    FROM post_ledger_entry($1, $2, $3, $4, $5, $6, $7, $8)
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
    unit: UnitOfWork,
    *,
    account_id: str,
    type: LedgerEntryType,
    amount_cents: int,
    description: str,
    deposit_id: str | None = None,
    order_id: str | None = None,
    invoice_id: str | None = None,
) -> Posting | None:
    """Move the balance by a signed amount and append its entry, in the unit's transaction.
    A debit that would take the balance below zero writes nothing and returns None."""
    assert amount_cents != 0
    conn = await unit.connection()
    row = await conn.fetchrow(
        _POST,
        new_id("txn"),
        account_id,
        type,
        amount_cents,
        description,
        deposit_id,
        order_id,
        invoice_id,
    )
    if row is None:
        return None
    return Posting(
        entry_id=row["entry_id"],
        seq=row["seq"],
        amount_cents=amount_cents,
        balance_after_cents=row["balance_after_cents"],
        created_at=row["created_at"],
    )
