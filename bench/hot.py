"""The lost-update check of run (c): read the hot account before and after, then compare.

Every order answered 201 must have moved the balance by exactly its price, once: the balance
must have dropped by price x 201s, the ledger must have gained one entry per 201, and the sum
of all the account's ledger entries must still equal its balance.
"""

from dataclasses import dataclass

import asyncpg

from bench.floor import PRODUCT_ID, VALIDITY_YEARS


@dataclass(frozen=True)
class AccountState:
    balance_cents: int
    last_entry_seq: int
    ledger_sum_cents: int


async def read_state(dsn: str, account_id: str) -> AccountState:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT balance_cents, last_entry_seq,"
            " (SELECT sum(amount_cents) FROM ledger_entry WHERE account_id = $1) AS ledger"
            " FROM account_balance WHERE account_id = $1",
            account_id,
        )
    finally:
        await connection.close()
    if row is None:
        raise RuntimeError(f"account {account_id} has no balance")
    return AccountState(row["balance_cents"], row["last_entry_seq"], int(row["ledger"]))


async def order_price_cents(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        price: int = await connection.fetchval(
            "SELECT price_per_year_cents * $2 FROM product WHERE id = $1",
            PRODUCT_ID,
            VALIDITY_YEARS,
        )
    finally:
        await connection.close()
    return price


@dataclass(frozen=True)
class HotCheck:
    answered_201: int  # the whole run, warm-up included
    before: AccountState
    after: AccountState
    order_cents: int

    @property
    def orders_moved(self) -> float:
        """How many orders' worth the balance dropped by."""
        return (self.before.balance_cents - self.after.balance_cents) / self.order_cents

    @property
    def debits_committed(self) -> int:
        return self.after.last_entry_seq - self.before.last_entry_seq

    @property
    def lost_updates(self) -> float:
        """Orders answered 201 whose debit is not in the balance (negative: debited twice)."""
        return self.answered_201 - self.orders_moved

    @property
    def ledger_matches(self) -> bool:
        return self.after.ledger_sum_cents == self.after.balance_cents

    @property
    def consistent(self) -> bool:
        return (
            self.lost_updates == 0
            and self.debits_committed == self.answered_201
            and self.ledger_matches
        )

    def summary(self) -> str:
        ledger = "equals" if self.ledger_matches else "DIFFERS FROM"
        return (
            f"hot account: {self.answered_201} orders answered 201, {self.debits_committed} "
            f"debits in its ledger, balance moved by {self.orders_moved:g} orders; "
            f"ledger sum {ledger} the balance; lost updates: {self.lost_updates:g}"
        )
