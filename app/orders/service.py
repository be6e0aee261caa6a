"""Rules of certificate orders: price, payment method, payment, cancellation.

Paid from the balance, an order is one statement (`place_balance_order`, migrations 0005
to 0014, read along with the caller's check): the idempotency key with the order's answer,
the order, its `order.paid` event and the debit with its ledger entry commit together, or,
with too little money, nothing does (402). One round trip in all. Paid by
card, it is a two-phase payment (`app.kit.payments`). Cancelling returns the money to where
it came from, once.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import asyncpg
from fastapi import Response
from sqlalchemy import select, update

from app.auth.models import Integration
from app.auth.principal import Caller, Principal
from app.finance.ledger import post_entry
from app.finance.models import LedgerEntryType
from app.gateway.base import Charge, Gateway, Refund
from app.kit import idempotency, payments
from app.kit.clock import Clock
from app.kit.db import UnitOfWork
from app.kit.errors import PROBLEM_CONTENT_TYPE, ApiError, NotFound, problem_body, validation_error
from app.kit.ids import new_id
from app.kit.pagination import PageRequest, paginate
from app.orders.models import CertificateOrder, OrderDraft, OrderStatus, Product, RefundStatus
from app.orders.schemas import OrderIn, order_out
from app.payment_methods.models import Card, PaymentMethod
from app.payment_methods.settings import PaymentSettings, load_payment_settings
from app.webhooks.events import queue_event
from app.webhooks.models import EventType

logger = logging.getLogger(__name__)


async def list_products(unit: UnitOfWork) -> list[Product]:
    return list((await unit.session.scalars(select(Product).order_by(Product.position))).all())


# The catalogue changes only with a migration, so each process keeps it for a while rather
# than reading a product on every order.
@dataclass(frozen=True)
class PricedProduct:
    """What an order needs of a product: plain values, safe to keep across units."""

    id: str
    name: str
    wildcard: bool
    price_per_year_cents: int
    price_per_extra_san_cents: int


_CATALOGUE_TTL_SECONDS = 60.0
_catalogue: tuple[float, dict[str, PricedProduct]] = (float("-inf"), {})


# Read by a statement complete on its own: a balance order's statement runs next, outside
# any transaction (a transaction opened here would be aborted by its BL409, and the caller's
# check after it refused with a 500).
_CATALOGUE = """SELECT id, name, wildcard, price_per_year_cents, price_per_extra_san_cents
FROM product"""


async def _product(unit: UnitOfWork, product_id: str) -> PricedProduct | None:
    global _catalogue
    loaded_at, products = _catalogue
    if time.monotonic() - loaded_at > _CATALOGUE_TTL_SECONDS:
        products = {
            row["id"]: PricedProduct(
                id=row["id"],
                name=row["name"],
                wildcard=row["wildcard"],
                price_per_year_cents=row["price_per_year_cents"],
                price_per_extra_san_cents=row["price_per_extra_san_cents"],
            )
            for row in await unit.fetch_atomic(_CATALOGUE)
        }
        _catalogue = (time.monotonic(), products)
    return products.get(product_id)


def order_amount_cents(product: PricedProduct, sans: int, years: int) -> int:
    return years * (product.price_per_year_cents + sans * product.price_per_extra_san_cents)


def resolve_payment_method(
    requested: PaymentMethod | None, settings: PaymentSettings, principal: Principal
) -> PaymentMethod:
    method = requested or settings.default_payment_method
    if method is None:
        raise ApiError(
            "payment_method_required",
            422,
            "Name a payment_method: the account has no default payment method.",
        )
    if principal.integration == Integration.AZURE_KEY_VAULT and method != PaymentMethod.BALANCE:
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


# How the router answers an order: the balance order's statement stores that very answer.
Answer = Callable[[CertificateOrder | OrderDraft], Response]


def _insufficient_funds() -> ApiError:
    return ApiError(
        "insufficient_funds", 402, "The balance is too low for this order; nothing was debited."
    )


# Read along with the caller (`Caller.along`): one statement checks who is calling and, for a
# member, places the order.
_PLACE_BALANCE_ORDER = """place_balance_order({account}, $1, $2, $3, $4, $5, $6, $7, $8, $9,
    $10, $11, $12, $13, $14, $15, $16, $17, $18) AS outcome"""


class _BalanceOutcome(StrEnum):
    """What place_balance_order answers."""

    PAID = "paid"
    NOT_BALANCE = "not_balance"  # not paid from the balance: the rules below decide
    KEY_TAKEN = "key_taken"  # a replay, a reuse, or a request still running
    INSUFFICIENT_FUNDS = "insufficient_funds"  # the key kept with the 402
    ORDER_EXISTS = "order_exists"  # raised (BL409): an order was made under this key already


async def _pay_from_balance(
    unit: UnitOfWork,
    caller: Caller,
    order: OrderDraft,
    product: PricedProduct,
    claim: idempotency.Claim,
    requested_method: PaymentMethod | None,
    answer: Answer,
) -> tuple[_BalanceOutcome, Response]:
    """Paid (with the answer stored under the key), or what stopped it; raises 401 or 403
    (nothing done), or 402."""
    response = answer(order)
    refusal = _insufficient_funds()
    try:
        row = await caller.along(
            unit,
            _PLACE_BALANCE_ORDER,
            claim.key,
            claim.fingerprint,
            claim.held,
            order.id,
            new_id("txn"),
            new_id("evt"),
            order.product_id,
            order.common_name,
            order.sans,
            order.validity_years,
            order.amount_cents,
            requested_method,
            f"Order {order.id}: {product.name}, {order.common_name}",
            order.created_at,
            bytes(response.body),
            response.headers.get("content-type"),
            problem_body(refusal.code, refusal.status, refusal.detail),
            PROBLEM_CONTENT_TYPE,
        )
    except asyncpg.PostgresError as error:
        if error.sqlstate == "BL409":
            await caller.check(unit)  # the statement was undone with the caller's row
            return _BalanceOutcome.ORDER_EXISTS, response
        raise
    outcome = _BalanceOutcome(row["outcome"])
    if outcome == _BalanceOutcome.PAID:
        claim.held = claim.answered = True
    elif outcome == _BalanceOutcome.INSUFFICIENT_FUNDS:
        # The statement kept the key with this very 402 (the order undone): it stands,
        # committed with the answer, whatever transaction the unit had open.
        claim.held = claim.answered = True
        refusal.keeps_changes = True
        raise refusal
    return outcome, response


@dataclass(frozen=True)
class PlacedOrder:
    order: CertificateOrder | OrderDraft
    answer: Response | None  # what the balance order's statement stored under the key


async def create_order(
    unit: UnitOfWork,
    gateway: Gateway,
    caller: Caller,
    body: OrderIn,
    claim: idempotency.Claim,
    answer: Answer,
) -> PlacedOrder:
    """The order, paid (from the balance), failed (the card declined) or pending_payment
    (the card's answer is not known yet). The caller is checked by the order's statement."""
    product = await _product(unit, body.product_id)
    if product is None:
        raise validation_error("body.product_id", "is not a product of the catalogue")
    _check_names(product, body)
    order = OrderDraft(
        id=new_id("ord"),
        idempotency_key=claim.key,
        product_id=product.id,
        common_name=body.common_name,
        sans=body.sans,
        validity_years=body.validity_years,
        amount_cents=order_amount_cents(product, len(body.sans), body.validity_years),
        created_at=datetime.now(UTC),
    )
    # The usual case, paid from the balance, in one statement with the caller's.
    outcome, stored = await _pay_from_balance(
        unit, caller, order, product, claim, body.payment_method, answer
    )
    if outcome == _BalanceOutcome.PAID:
        return PlacedOrder(order, stored)
    # Anything else: the key held in the unit's transaction first (or a replay, a reuse, a
    # request still running), then the rules.
    principal = caller.principal
    await idempotency.reserve(unit, claim)
    existing = await unit.session.scalar(
        select(CertificateOrder).where(
            CertificateOrder.account_id == principal.account_id,
            CertificateOrder.idempotency_key == claim.key,
        )
    )
    if existing is not None:  # a retry that took over an abandoned key: what it made
        return PlacedOrder(existing, None)
    settings = await load_payment_settings(unit, principal.account_id, principal.account.email)
    method = resolve_payment_method(body.payment_method, settings, principal)
    if method == PaymentMethod.BALANCE:
        outcome, stored = await _pay_from_balance(
            unit, caller, order, product, claim, method, answer
        )
        assert outcome == _BalanceOutcome.PAID, outcome
        return PlacedOrder(order, stored)
    card_token = await unit.session.scalar(
        select(Card.gateway_token).where(Card.account_id == principal.account_id)
    )
    if card_token is None:
        raise ApiError("no_card_on_file", 409, "Add a card before paying by card.")
    order.payment_method = PaymentMethod.CARD
    order.status = OrderStatus.PENDING_PAYMENT
    row = order.row(principal.account_id)
    unit.session.add(row)
    await unit.session.flush()
    charge = payments.CardCharge(
        row.id, order_charge_key(row.id), card_token, row.amount_cents, f"Order {row.id}"
    )
    settled = await payments.charge_pending(unit, gateway, charge, settle_card_order)
    return PlacedOrder(settled or row, None)


def order_charge_key(order_id: str) -> str:
    return f"order:{order_id}:charge"


def order_refund_key(order_id: str) -> str:
    return f"order:{order_id}:refund"


async def settle_card_order(
    unit: UnitOfWork, order_id: str, charge: Charge | None, decline_code: str | None
) -> CertificateOrder:
    """Record the gateway's definite answer for an order pending payment, exactly once."""
    pending = (
        CertificateOrder.id == order_id,
        CertificateOrder.status == OrderStatus.PENDING_PAYMENT,
    )
    if charge is not None and charge.status == "succeeded":
        values: dict[str, object] = {
            "status": OrderStatus.PAID,
            "gateway_charge_id": charge.charge_id,
        }
    else:
        values = {
            "status": OrderStatus.FAILED,
            "failure_code": "card_declined",
            "decline_code": decline_code or "generic_decline",
        }
    order: CertificateOrder | None = await unit.session.scalar(
        update(CertificateOrder).where(*pending).values(**values).returning(CertificateOrder),
        execution_options={"populate_existing": True},
    )
    if order is None:  # settled already, by a reconciler or an earlier call
        return await unit.session.get_one(CertificateOrder, order_id, populate_existing=True)
    if order.status == OrderStatus.PAID:
        await queue_event(unit, order.account_id, EventType.ORDER_PAID, order_out(order))
    return order


async def list_orders(
    unit: UnitOfWork, principal: Principal, page: PageRequest
) -> tuple[list[CertificateOrder], bool]:
    query = select(CertificateOrder).where(CertificateOrder.account_id == principal.account_id)
    return await paginate(unit, query, CertificateOrder, page)


async def get_order(unit: UnitOfWork, principal: Principal, order_id: str) -> CertificateOrder:
    return await _load_order(unit, principal, order_id)


async def _load_order(
    unit: UnitOfWork, principal: Principal, order_id: str, *, for_update: bool = False
) -> CertificateOrder:
    query = select(CertificateOrder).where(
        CertificateOrder.id == order_id, CertificateOrder.account_id == principal.account_id
    )
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    order = await unit.session.scalar(query)
    if order is None:
        raise NotFound("order")
    return order


async def cancel_order(
    unit: UnitOfWork, gateway: Gateway, principal: Principal, order_id: str
) -> CertificateOrder:
    order = await _load_order(unit, principal, order_id, for_update=True)
    if order.status == OrderStatus.CANCELED:
        return order
    if order.status != OrderStatus.PAID:
        raise ApiError(
            "order_not_cancelable",
            409,
            f"Only a paid order can be canceled; this one is {order.status}.",
        )
    order.status = OrderStatus.CANCELED
    order.canceled_at = datetime.now(UTC)
    await queue_event(unit, order.account_id, EventType.ORDER_CANCELED, order_out(order))
    if order.payment_method == PaymentMethod.BALANCE:
        await post_entry(
            unit,
            account_id=order.account_id,
            type=LedgerEntryType.REFUND,
            amount_cents=order.amount_cents,
            order_id=order.id,
            description=f"Refund of canceled order {order.id}",
        )
        await unit.session.flush()
        return order
    order.refund_status = RefundStatus.PENDING
    await unit.session.flush()
    return await refund_card_order(unit, gateway, order)


async def refund_card_order(
    unit: UnitOfWork, gateway: Gateway, order: CertificateOrder
) -> CertificateOrder:
    """Refund a canceled card order at the gateway, once its cancellation has committed. The
    gateway key makes a repeat harmless; an unanswered refund stays pending for the
    reconciler."""
    assert order.gateway_charge_id is not None
    refund = payments.CardRefund(
        order.id, order_refund_key(order.id), order.gateway_charge_id, order.amount_cents
    )
    settled = await payments.refund_pending(unit, gateway, refund, _settle_refund)
    return settled or order


async def _settle_refund(unit: UnitOfWork, order_id: str, refund: Refund) -> CertificateOrder:
    updated: CertificateOrder | None = await unit.session.scalar(
        update(CertificateOrder)
        .where(CertificateOrder.id == order_id)
        .values(refund_status=RefundStatus.SUCCEEDED, gateway_refund_id=refund.refund_id)
        .returning(CertificateOrder),
        execution_options={"populate_existing": True},
    )
    assert updated is not None
    return updated


# What the reconciler and `billing pending` see of orders.


async def _pending_orders(
    unit: UnitOfWork, older_than: timedelta | None, *, refunds: bool
) -> list[payments.Pending]:
    since = CertificateOrder.canceled_at if refunds else CertificateOrder.created_at
    unsettled = (
        CertificateOrder.refund_status == RefundStatus.PENDING
        if refunds
        else CertificateOrder.status == OrderStatus.PENDING_PAYMENT
    )
    query = select(CertificateOrder).where(unsettled)
    rows = await payments.pending_rows(unit, query, since, older_than)
    kind = "refund" if refunds else "order"
    return [
        payments.Pending(kind, o.id, o.account_id, o.amount_cents, o.created_at, wait)
        for o, wait in rows
    ]


async def _pending_charges(unit: UnitOfWork, older: timedelta | None) -> list[payments.Pending]:
    return await _pending_orders(unit, older, refunds=False)


async def _pending_refunds(unit: UnitOfWork, older: timedelta | None) -> list[payments.Pending]:
    return await _pending_orders(unit, older, refunds=True)


async def _resolve_refund(
    unit: UnitOfWork, gateway: Gateway, clock: Clock, pending: payments.Pending
) -> bool:
    order = await unit.session.get_one(CertificateOrder, pending.ref)
    order = await refund_card_order(unit, gateway, order)
    return order.refund_status != RefundStatus.PENDING


ORDER_CHARGES = payments.charge_kind(
    "order", _pending_charges, lambda p: order_charge_key(p.ref), lambda _: settle_card_order
)
ORDER_REFUNDS = payments.PendingKind("refund", _pending_refunds, _resolve_refund)
