"""Settle payments whose gateway outcome was unknown: ask the gateway under the key we
charged (or refunded) with, then settle exactly once (the settle functions only change a
pending row).

`PENDING_KINDS` is the one list of what can be pending: deposits, card orders, refunds of
canceled card orders and card attempts at invoices. The worker reconciles what is older than
RECONCILE_AFTER_SECONDS on its schedule, `billing reconcile` once, and `billing pending`
lists it all. Ages are measured by the database's clock, the one that stamped the rows, so
several hosts agree on them.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from app.billing.run import INVOICE_ATTEMPTS
from app.finance.service import DEPOSIT_CHARGES
from app.gateway.base import Gateway
from app.kit.clock import Clock
from app.kit.db import Database
from app.kit.payments import Pending, PendingKind
from app.orders.service import ORDER_CHARGES, ORDER_REFUNDS

logger = logging.getLogger(__name__)

PENDING_KINDS: tuple[PendingKind, ...] = (
    DEPOSIT_CHARGES,
    ORDER_CHARGES,
    ORDER_REFUNDS,
    INVOICE_ATTEMPTS,
)


@dataclass
class ReconcileReport:
    settled: int = 0
    still_unknown: int = 0


async def list_pending(database: Database, older_than: timedelta | None = None) -> list[Pending]:
    """Every pending payment (older than `older_than`), kind by kind, oldest first."""
    found: list[Pending] = []
    for kind in PENDING_KINDS:
        found += await database.run(lambda unit: kind.list_pending(unit, older_than))  # noqa: B023
    return found


async def reconcile_pending(
    database: Database, gateway: Gateway, clock: Clock, older_than: timedelta
) -> ReconcileReport:
    report = ReconcileReport()
    kinds = {kind.name: kind for kind in PENDING_KINDS}
    for payment in await list_pending(database, older_than):
        resolve = kinds[payment.kind].resolve
        if await database.run(lambda unit: resolve(unit, gateway, clock, payment)):  # noqa: B023
            report.settled += 1
        else:
            report.still_unknown += 1
    return report
