"""The floor (a): the order's own debit transaction issued straight through asyncpg, no HTTP.

It is what `POST /v1/orders` paid from the balance must do in the database and nothing else:
BEGIN; INSERT the certificate_order; the conditional debit with its ledger entry, the one
call of the ledger's database function; COMMIT. No authentication, no idempotency record, no
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

# The ledger's own function (migration 0005), as app/finance/ledger.py calls it.
_DEBIT = "SELECT * FROM post_ledger_entry($1, $2, 'order', $3, $4, NULL, $5, NULL)"


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
                -product.amount_cents,
                f"Order {order_id}: {product.name}, {COMMON_NAME}",
                order_id,
            )
            if posted is None:
                raise _InsufficientFunds
    except _InsufficientFunds:
        return "insufficient_funds"
    return None


class _InsufficientFunds(Exception):
    """Raised inside the transaction so that it rolls back, like the service's 402."""
