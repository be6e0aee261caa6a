"""Settle payments whose gateway outcome was unknown: ask the gateway by the idempotency key
we charged under, then settle exactly once (the settle functions only change a pending row).

Pending deposits, card orders and card attempts at invoices older than
RECONCILE_AFTER_SECONDS, and refunds of canceled card orders the gateway has not confirmed.
The worker runs this on its schedule; `billing reconcile` runs it once. Ages are measured by
the database's clock, the one that stamped the rows, so several hosts agree on them.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.billing.models import InvoiceAttempt
from app.billing.run import attempt_charge_key, settle_attempt
from app.clock import Clock
from app.finance.models import Deposit
from app.finance.service import deposit_charge_key, settle_deposit
from app.gateway.base import Gateway, GatewayUnavailable
from app.orders.models import CertificateOrder
from app.orders.service import order_charge_key, refund_card_order, settle_card_order

logger = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    settled: int = 0
    still_unknown: int = 0


async def reconcile_pending(
    factory: async_sessionmaker[AsyncSession],
    gateway: Gateway,
    clock: Clock,
    older_than: timedelta,
) -> ReconcileReport:
    report = ReconcileReport()
    cutoff = func.clock_timestamp() - older_than
    async with factory() as session:
        async with session.begin():
            deposit_ids = list(
                (
                    await session.scalars(
                        select(Deposit.id)
                        .where(Deposit.status == "pending", Deposit.created_at < cutoff)
                        .order_by(Deposit.created_at)
                        .limit(500)
                    )
                ).all()
            )
            orders = list(
                (
                    await session.scalars(
                        select(CertificateOrder)
                        .where(
                            or_(
                                and_(
                                    CertificateOrder.status == "pending_payment",
                                    CertificateOrder.created_at < cutoff,
                                ),
                                and_(
                                    CertificateOrder.refund_status == "pending",
                                    CertificateOrder.canceled_at < cutoff,
                                ),
                            )
                        )
                        .order_by(CertificateOrder.created_at)
                        .limit(500)
                    )
                ).all()
            )
            attempts = (
                await session.execute(
                    select(InvoiceAttempt.invoice_id, InvoiceAttempt.number)
                    .where(InvoiceAttempt.outcome == "pending", InvoiceAttempt.created_at < cutoff)
                    .order_by(InvoiceAttempt.created_at)
                    .limit(500)
                )
            ).all()
        for deposit_id in deposit_ids:
            try:
                charge = await gateway.find_charge(deposit_charge_key(deposit_id))
            except GatewayUnavailable:
                report.still_unknown += 1
                continue
            # No charge under our key: it never happened, so the deposit failed.
            await settle_deposit(
                session, deposit_id, charge, charge.decline_code if charge else None
            )
            report.settled += 1
        for order in orders:
            try:
                if order.status == "pending_payment":
                    charge = await gateway.find_charge(order_charge_key(order.id))
                    decline = charge.decline_code if charge else None
                    await settle_card_order(session, order.id, charge, decline)
                else:
                    order = await refund_card_order(session, gateway, order)
                    if order.refund_status == "pending":
                        report.still_unknown += 1
                        continue
            except GatewayUnavailable:
                report.still_unknown += 1
                continue
            report.settled += 1
        for invoice_id, number in attempts:
            try:
                charge = await gateway.find_charge(attempt_charge_key(invoice_id, number))
            except GatewayUnavailable:
                report.still_unknown += 1
                continue
            # No charge under our key: it never happened (charge_not_made), and the invoice
            # moves on to its next retry.
            decline = charge.decline_code if charge else None
            await settle_attempt(session, clock, invoice_id, number, charge, decline)
            report.settled += 1
    return report
