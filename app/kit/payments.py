"""The two-phase payment: the one way a card is charged, for deposits, card orders and
invoice attempts (and what is still to come: automatic top-ups).

1. The service records what is to be paid as pending, in its unit of work.
2. `charge_pending` commits that, then charges the card outside any transaction, under a
   gateway idempotency key derived from our id (`deposit:dep_…:charge`), so a repeat can
   never charge twice.
3. The gateway's definite answer is settled by the kind's own `settle`, which changes only
   a pending row: whoever settles first (this request, or the reconciler) wins, once.
An unknown outcome (a timeout, a 5xx) settles nothing: the payment stays pending and the
reconciler asks the gateway under the same key later.

Each kind of pending payment is a `PendingKind`: how to list what is pending and how to
settle it. The reconciler and `billing pending` walk one list of them.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, func

from app.gateway.base import CardDeclined, Charge, Gateway, GatewayError, GatewayUnavailable, Refund
from app.kit.clock import Clock
from app.kit.db import UnitOfWork

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Settle the payment `ref` with the gateway's answer: a charge (succeeded or declined), or
# None with a decline code, or None and None (the gateway never made the charge).
Settle = Callable[[UnitOfWork, str, Charge | None, str | None], Awaitable[T]]


@dataclass(frozen=True)
class CardCharge:
    """A pending payment to charge: `ref` is our id of it, `key` the gateway's key."""

    ref: str
    key: str
    card_token: str
    amount_cents: int
    description: str


async def charge_pending(
    unit: UnitOfWork, gateway: Gateway, charge: CardCharge, settle: Settle[T]
) -> T | None:
    """Phases two and three; None when the outcome is unknown (left to the reconciler)."""
    # The pending record must be durable before the card is charged, and no transaction
    # (nor its row locks) is held while the gateway answers.
    await unit.commit()
    try:
        made = await gateway.charge(
            charge.card_token,
            charge.amount_cents,
            idempotency_key=charge.key,
            description=charge.description,
        )
    except CardDeclined as declined:
        return await _settled(unit, settle(unit, charge.ref, None, declined.decline_code))
    except GatewayUnavailable:
        logger.warning("%s: gateway outcome unknown, left pending", charge.ref)
        return None
    return await _settled(unit, settle(unit, charge.ref, made, None))


async def _settled(unit: UnitOfWork, settling: Awaitable[T]) -> T:
    """The gateway's answer, recorded and committed: it stands however the request then
    answers (a declined deposit is kept as failed, and answered 402)."""
    result = await settling
    await unit.commit()
    return result


@dataclass(frozen=True)
class CardRefund:
    """A refund recorded as pending: `ref` is our id of what is refunded."""

    ref: str
    key: str
    charge_id: str
    amount_cents: int


async def refund_pending(
    unit: UnitOfWork,
    gateway: Gateway,
    refund: CardRefund,
    settle: Callable[[UnitOfWork, str, Refund], Awaitable[T]],
) -> T | None:
    """A refund in the same phases as a charge; None when the gateway did not confirm it."""
    await unit.commit()
    try:
        made = await gateway.refund(
            refund.charge_id, refund.amount_cents, idempotency_key=refund.key
        )
    except GatewayError:
        logger.warning("%s: refund not confirmed, left pending", refund.ref)
        return None
    return await _settled(unit, settle(unit, refund.ref, made))


@dataclass(frozen=True)
class Pending:
    """A payment whose outcome is not known yet, as the reconciler and operators see it."""

    kind: str
    ref: str
    account_id: str
    amount_cents: int
    created_at: datetime
    age: timedelta
    note: str = ""


@dataclass(frozen=True)
class PendingKind:
    name: str
    # What is pending longer than the age given (all of it with None), oldest first.
    list_pending: Callable[[UnitOfWork, timedelta | None], Awaitable[list[Pending]]]
    # Ask the gateway and settle (on the clock given): False when its answer is still unknown.
    resolve: Callable[[UnitOfWork, Gateway, Clock, Pending], Awaitable[bool]]


# At most this many of one kind per pass: the reconciler's next pass takes the rest.
_PENDING_BATCH = 500


async def pending_rows(
    unit: UnitOfWork, query: Select[*tuple[Any, ...]], since: Any, older_than: timedelta | None
) -> list[Any]:
    """The rows of `query` (what is pending of one kind) with their age by the database's
    clock (the one that stamped them, so hosts agree) as a last column: those pending longer
    than `older_than` (all with None), oldest first."""
    age = func.clock_timestamp() - since
    query = query.add_columns(age).order_by(since).limit(_PENDING_BATCH)
    if older_than is not None:
        query = query.where(age > older_than)
    return list((await unit.session.execute(query)).all())


def charge_kind(
    name: str,
    list_pending: Callable[[UnitOfWork, timedelta | None], Awaitable[list[Pending]]],
    key_of: Callable[[Pending], str],
    settle_with: Callable[[Clock], Settle[Any]],
) -> PendingKind:
    """A kind whose pending payments are charges: the gateway is asked for the charge made
    under the payment's key; none means it never happened."""

    async def resolve(unit: UnitOfWork, gateway: Gateway, clock: Clock, pending: Pending) -> bool:
        try:
            made = await gateway.find_charge(key_of(pending))
        except GatewayUnavailable:
            return False
        await settle_with(clock)(unit, pending.ref, made, made.decline_code if made else None)
        return True

    return PendingKind(name, list_pending, resolve)
