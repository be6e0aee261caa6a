"""Settle payments whose gateway outcome was unknown: ask the gateway by the idempotency key
we charged under, then settle exactly once (the settle functions only change a pending row).

Pending deposits and card orders older than RECONCILE_AFTER_SECONDS, and refunds of
canceled card orders the gateway has not confirmed. The worker runs this on a schedule
(next step); `python -m app.reconcile` runs it once.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

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
    factory: async_sessionmaker[AsyncSession], gateway: Gateway, older_than: timedelta
) -> ReconcileReport:
    report = ReconcileReport()
    cutoff = datetime.now(UTC) - older_than
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
                                CertificateOrder.status == "pending_payment",
                                CertificateOrder.refund_status == "pending",
                            ),
                            CertificateOrder.created_at < cutoff,
                        )
                        .order_by(CertificateOrder.created_at)
                        .limit(500)
                    )
                ).all()
            )
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
    return report


def main() -> None:
    from app.config import get_settings
    from app.db import create_engine, create_session_factory
    from app.gateway.factory import create_gateway
    from app.logs import configure_logging

    configure_logging()
    settings = get_settings()

    async def run() -> ReconcileReport:
        engine = create_engine(settings)
        gateway = create_gateway(settings)
        try:
            return await reconcile_pending(
                create_session_factory(engine),
                gateway,
                timedelta(seconds=settings.reconcile_after_seconds),
            )
        finally:
            await gateway.aclose()
            await engine.dispose()

    report = asyncio.run(run())
    print(f"settled {report.settled}, still unknown {report.still_unknown}")


if __name__ == "__main__":
    main()
