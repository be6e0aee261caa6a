"""The floor (a): the order's own debit transaction issued straight through asyncpg, no HTTP.

It is what `POST /v1/orders` paid from the balance must do in the database and nothing else:
BEGIN; INSERT the certificate_order; the conditional balance UPDATE and ledger INSERT as the
one statement of app/finance/ledger.py; COMMIT. No authentication, no idempotency record, no
ORM, no HTTP: the service's throughput divided by this one says what the rest costs.
"""

from dataclasses import dataclass

import asyncpg

from app.kit.ids import new_id

PRODUCT_ID = "ssl_dv"
COMMON_NAME = "www.example.com"
VALIDITY_YEARS = 1

_PRODUCT = "SELECT name, price_per_year_cents FROM product WHERE id = $1"

_INSERT_ORDER = """
INSERT INTO certificate_order (id, account_id, idempotency_key, product_id, common_name, sans,
                               validity_years, amount_cents, payment_method, status)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'balance', 'paid')
"""

# app/finance/ledger.py's _DEBIT, word for word, with asyncpg's positional parameters:
# $1 id, $2 account_id, $3 type, $4 amount (negative), $5 deposit_id, $6 order_id,
# $7 description.
_DEBIT = """
WITH moved AS (
    UPDATE account_balance
    SET balance_cents = balance_cents + $4, last_entry_seq = last_entry_seq + 1
    WHERE account_id = $2 AND balance_cents + $4 >= 0
    RETURNING balance_cents, last_entry_seq
)
INSERT INTO ledger_entry (id, account_id, seq, type, amount_cents, balance_after_cents,
                          deposit_id, order_id, description)
SELECT $1, $2, last_entry_seq, $3, $4, balance_cents, $5, $6, $7
FROM moved
RETURNING id, seq, balance_after_cents, created_at,
    (SELECT low_balance_threshold_cents FROM finance_settings
     WHERE account_id = $2) AS threshold_cents
"""


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    amount_cents: int  # of one order: one year, no extra names


async def load_product(connection: asyncpg.Connection, product_id: str = PRODUCT_ID) -> Product:
    row = await connection.fetchrow(_PRODUCT, product_id)
    if row is None:
        raise RuntimeError(f"product {product_id} is not in the catalogue")
    return Product(product_id, row["name"], row["price_per_year_cents"] * VALIDITY_YEARS)


async def place_order(
    connection: asyncpg.Connection, product: Product, account_id: str, idempotency_key: str
) -> str | None:
    """One order paid from the balance, in one transaction. None when it committed, else why
    not (the debit found too little money and the whole transaction was rolled back)."""
    order_id = new_id("ord")
    try:
        async with connection.transaction():
            await connection.execute(
                _INSERT_ORDER,
                order_id,
                account_id,
                idempotency_key,
                product.id,
                COMMON_NAME,
                [],
                VALIDITY_YEARS,
                product.amount_cents,
            )
            posted = await connection.fetchrow(
                _DEBIT,
                new_id("txn"),
                account_id,
                "order",
                -product.amount_cents,
                None,
                order_id,
                f"Order {order_id}: {product.name}, {COMMON_NAME}",
            )
            if posted is None:
                raise _InsufficientFunds
    except _InsufficientFunds:
        return "insufficient_funds"
    return None


class _InsufficientFunds(Exception):
    """Raised inside the transaction so that it rolls back, like the service's 402."""
