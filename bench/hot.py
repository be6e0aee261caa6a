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
class HotWindow:
    """One window of (c): the 201s it answered (warm-up included), the account around it."""

    answered_201: int
    before: AccountState
    after: AccountState


@dataclass(frozen=True)
class HotCheck:
    """Every window of (c) together (the floor's windows in between move the balance too, so
    each window is read on its own)."""

    windows: tuple[HotWindow, ...]
    order_cents: int

    @property
    def answered_201(self) -> int:
        return sum(window.answered_201 for window in self.windows)

    @property
    def orders_moved(self) -> float:
        """How many orders' worth the balance dropped by."""
        moved = sum(w.before.balance_cents - w.after.balance_cents for w in self.windows)
        return moved / self.order_cents

    @property
    def debits_committed(self) -> int:
        return sum(w.after.last_entry_seq - w.before.last_entry_seq for w in self.windows)

    @property
    def lost_updates(self) -> float:
        """Orders answered 201 whose debit is not in the balance (negative: debited twice)."""
        return self.answered_201 - self.orders_moved

    @property
    def ledger_matches(self) -> bool:
        return all(w.after.ledger_sum_cents == w.after.balance_cents for w in self.windows)

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
