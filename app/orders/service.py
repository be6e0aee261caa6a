"""Rules of certificate orders: price, payment method, payment, cancellation.

Paid from the balance, an order is one short transaction: insert the order and debit the
balance with one conditional statement; too little money rolls both back (402). Paid by
card, it follows the two phases of a deposit: record `pending_payment`, charge outside any
transaction, settle. Cancelling returns the money to where it came from, once.
"""

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.db import driver_connection, engine_of, in_raw_transaction, in_transaction
from app.errors import ApiError, NotFound, validation_error
from app.finance.ledger import post_entry
from app.finance.models import FinanceSettings
from app.finance.payment_settings import PaymentSettings, settings_of
from app.gateway.base import CardDeclined, Charge, Gateway, GatewayError, GatewayUnavailable
from app.ids import new_id
from app.orders.models import CertificateOrder, Product
from app.orders.schemas import OrderIn
from app.pagination import PageRequest, paginate

logger = logging.getLogger(__name__)

AZURE_KEY_VAULT = "azure_key_vault"


async def list_products(session: AsyncSession) -> list[Product]:
    async with session.begin():
        return list((await session.scalars(select(Product).order_by(Product.position))).all())


# The catalogue changes only with a migration, so each process keeps it for a while rather
# than reading a product on every order.
@dataclass(frozen=True)
class PricedProduct:
    """What an order needs of a product: plain values, safe to keep across sessions."""

    id: str
    name: str
    wildcard: bool
    price_per_year_cents: int
    price_per_extra_san_cents: int


_CATALOGUE_TTL_SECONDS = 60.0
_catalogue: tuple[float, dict[str, PricedProduct]] = (float("-inf"), {})


async def _product(conn: asyncpg.Connection, product_id: str) -> PricedProduct | None:
    global _catalogue
    loaded_at, products = _catalogue
    if time.monotonic() - loaded_at > _CATALOGUE_TTL_SECONDS:
        rows = await conn.fetch(
            "SELECT id, name, wildcard, price_per_year_cents, price_per_extra_san_cents"
            " FROM product"
        )
        products = {row["id"]: PricedProduct(**row) for row in rows}
        _catalogue = (time.monotonic(), products)
    return products.get(product_id)


def order_amount_cents(product: PricedProduct, sans: int, years: int) -> int:
    return years * (product.price_per_year_cents + sans * product.price_per_extra_san_cents)


def resolve_payment_method(
    requested: str | None, settings: PaymentSettings, principal: Principal
) -> str:
    method = requested or settings.default_payment_method
    if method is None:
        raise ApiError(
            "payment_method_required",
            422,
            "Name a payment_method: the account has no default payment method.",
        )
    if principal.integration == AZURE_KEY_VAULT and method != "balance":
        raise ApiError(
            "payment_method_not_allowed",
            403,
            "Azure Key Vault integrations may only pay from the account balance.",
        )
    if not settings.enabled(method):
        raise ApiError(
            "payment_method_disabled",
            422,
            f"Payments by {method} are not enabled for this account.",
        )
    return method


def _check_names(product: PricedProduct, body: OrderIn) -> None:
    if product.wildcard:
        return
    if body.common_name.startswith("*."):
        raise validation_error("body.common_name", f"{product.id} is not a wildcard product")
    for index, san in enumerate(body.sans):
        if san.startswith("*."):
            raise validation_error(f"body.sans.{index}", f"{product.id} is not a wildcard product")


async def create_order(
    session: AsyncSession,
    gateway: Gateway,
    principal: Principal,
    body: OrderIn,
    idempotency_key: str,
) -> CertificateOrder:
    async def place(conn: asyncpg.Connection) -> tuple[CertificateOrder, str | None]:
        """The order, and the card token to charge when it is to be paid by card. The hot
        path of the service: plain statements on the transaction's connection."""
        product = await _product(conn, body.product_id)
        if product is None:
            raise validation_error("body.product_id", "is not a product of the catalogue")
        _check_names(product, body)
        settings_row = await conn.fetchrow(
            "SELECT * FROM finance_settings WHERE account_id = $1", principal.account_id
        )
        settings = settings_of(
            FinanceSettings(**settings_row) if settings_row else None, principal.account
        )
        method = resolve_payment_method(body.payment_method, settings, principal)
        card_token = None
        if method == "card":
            card_token = await conn.fetchval(
                "SELECT gateway_token FROM card WHERE account_id = $1", principal.account_id
            )
            if card_token is None:
                raise ApiError("no_card_on_file", 409, "Add a card before paying by card.")
        row = await conn.fetchrow(
            _INSERT_ORDER,
            new_id("ord"),
            principal.account_id,
            idempotency_key,
            product.id,
            body.common_name,
            body.sans,
            body.validity_years,
            order_amount_cents(product, len(body.sans), body.validity_years),
            method,
            "paid" if method == "balance" else "pending_payment",
        )
        if row is None:  # a retry that took over an abandoned key: what it already made
            row = await conn.fetchrow(
                "SELECT * FROM certificate_order WHERE account_id = $1 AND idempotency_key = $2",
                principal.account_id,
                idempotency_key,
            )
            return CertificateOrder(**row), None
        order = CertificateOrder(**row)
        if method == "card":
            return order, card_token
        posting = await post_entry(
            conn,
            account_id=principal.account_id,
            type="order",
            amount_cents=-order.amount_cents,
            order_id=order.id,
            description=f"Order {order.id}: {product.name}, {order.common_name}",
        )
        if posting is None:
            raise ApiError(
                "insufficient_funds",
                402,
                "The balance is too low for this order; nothing was debited.",
            )
        return order, None

    order, card_token = await in_raw_transaction(engine_of(session), place)
    if card_token is None:
        return order
    try:
        charge = await gateway.charge(
            card_token,
            order.amount_cents,
            idempotency_key=order_charge_key(order.id),
            description=f"Order {order.id}",
        )
    except CardDeclined as declined:
        return await settle_card_order(session, order.id, None, declined.decline_code)
    except GatewayUnavailable:
        logger.warning("order %s: gateway outcome unknown, left pending_payment", order.id)
        return order
    return await settle_card_order(session, order.id, charge, None)


_INSERT_ORDER = """
    INSERT INTO certificate_order (id, account_id, idempotency_key, product_id, common_name,
        sans, validity_years, amount_cents, payment_method, status)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT ON CONSTRAINT uq_certificate_order_account_id_key DO NOTHING
    RETURNING *
"""


def order_charge_key(order_id: str) -> str:
    return f"order:{order_id}:charge"


def order_refund_key(order_id: str) -> str:
    return f"order:{order_id}:refund"


async def settle_card_order(
    session: AsyncSession, order_id: str, charge: Charge | None, decline_code: str | None
) -> CertificateOrder:
    """Record the gateway's definite answer for an order pending payment, exactly once."""

    async def work() -> CertificateOrder:
        pending = (CertificateOrder.id == order_id, CertificateOrder.status == "pending_payment")
        order: CertificateOrder | None
        if charge is not None and charge.status == "succeeded":
            order = await session.scalar(
                update(CertificateOrder)
                .where(*pending)
                .values(status="paid", gateway_charge_id=charge.charge_id)
                .returning(CertificateOrder)
            )
        else:
            order = await session.scalar(
                update(CertificateOrder)
                .where(*pending)
                .values(
                    status="failed",
                    failure_code="card_declined",
                    decline_code=decline_code or "generic_decline",
                )
                .returning(CertificateOrder)
            )
        if order is None:
            order = await session.get_one(CertificateOrder, order_id, populate_existing=True)
        return order

    return await in_transaction(session, work)


async def list_orders(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> tuple[list[CertificateOrder], bool]:
    async with session.begin():
        query = select(CertificateOrder).where(CertificateOrder.account_id == principal.account_id)
        return await paginate(session, query, CertificateOrder, page)


async def get_order(session: AsyncSession, principal: Principal, order_id: str) -> CertificateOrder:
    async with session.begin():
        return await _load_order(session, principal, order_id)


async def _load_order(
    session: AsyncSession, principal: Principal, order_id: str, *, for_update: bool = False
) -> CertificateOrder:
    query = select(CertificateOrder).where(
        CertificateOrder.id == order_id, CertificateOrder.account_id == principal.account_id
    )
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    order = await session.scalar(query)
    if order is None:
        raise NotFound("order")
    return order


async def cancel_order(
    session: AsyncSession, gateway: Gateway, principal: Principal, order_id: str
) -> CertificateOrder:
    async def cancel() -> CertificateOrder:
        order = await _load_order(session, principal, order_id, for_update=True)
        if order.status == "canceled":
            return order
        if order.status != "paid":
            raise ApiError(
                "order_not_cancelable",
                409,
                f"Only a paid order can be canceled; this one is {order.status}.",
            )
        order.status = "canceled"
        order.canceled_at = datetime.now(UTC)
        if order.payment_method == "balance":
            await post_entry(
                await driver_connection(session),
                account_id=order.account_id,
                type="refund",
                amount_cents=order.amount_cents,
                order_id=order.id,
                description=f"Refund of canceled order {order.id}",
            )
        else:
            order.refund_status = "pending"
        await session.flush()
        return order

    order = await in_transaction(session, cancel)
    if order.refund_status == "pending":
        order = await refund_card_order(session, gateway, order)
    return order


async def refund_card_order(
    session: AsyncSession, gateway: Gateway, order: CertificateOrder
) -> CertificateOrder:
    """Refund a canceled card order at the gateway. The gateway key makes a repeat harmless; an
    unanswered refund stays pending for the reconciler."""
    assert order.gateway_charge_id is not None
    try:
        refund = await gateway.refund(
            order.gateway_charge_id, order.amount_cents, idempotency_key=order_refund_key(order.id)
        )
    except GatewayError:
        logger.warning("order %s: refund not confirmed, left pending", order.id)
        return order

    async def record() -> CertificateOrder:
        updated: CertificateOrder | None = await session.scalar(
            update(CertificateOrder)
            .where(CertificateOrder.id == order.id)
            .values(refund_status="succeeded", gateway_refund_id=refund.refund_id)
            .returning(CertificateOrder)
        )
        assert updated is not None
        return updated

    return await in_transaction(session, record)
