"""Rules of money held: payment settings, the balance, deposits and the ledger.

Deposits run in two phases. A pending deposit is recorded and committed; the card is
charged outside any transaction, under a gateway key derived from the deposit id; a second
short transaction settles it. A timeout or a gateway error leaves it pending and credits
nothing: the reconciler asks the gateway later and calls settle_deposit() like we do.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.accounts.models import Account, BillingInfo
from app.auth.principal import Principal
from app.config import Settings
from app.db import driver_connection, in_transaction, raw_connection
from app.errors import ApiError, NotFound
from app.finance.ledger import Posting, post_entry
from app.finance.models import Deposit, FinanceSettings, LedgerEntry
from app.finance.payment_settings import PaymentSettings, load_payment_settings, settings_of
from app.finance.schemas import FinanceSettingsPatch
from app.gateway.base import CardDeclined, Charge, Gateway, GatewayUnavailable
from app.ids import new_id
from app.money import format_amount
from app.pagination import PageRequest, paginate
from app.payment_methods.models import Card
from app.receipts import Receipt, ReceiptLine, billed_to, card_label, render_pdf

logger = logging.getLogger(__name__)


async def get_payment_settings(session: AsyncSession, principal: Principal) -> PaymentSettings:
    async with session.begin():
        return await load_payment_settings(session, principal.account)


async def update_payment_settings(
    session: AsyncSession, principal: Principal, patch: FinanceSettingsPatch
) -> PaymentSettings:
    async def work() -> PaymentSettings:
        row = await session.get(FinanceSettings, principal.account_id, with_for_update=True)
        current = settings_of(row, principal.account)
        changes = {field: getattr(patch, field) for field in patch.model_fields_set}
        balance_on = changes.get("balance_payments_enabled", current.balance_payments_enabled)
        card_on = changes.get("card_payments_enabled", current.card_payments_enabled)
        default = changes.get("default_payment_method", current.default_payment_method)
        if not balance_on and not card_on:
            raise ApiError(
                "no_payment_method_enabled", 422, "At least one payment method must stay enabled."
            )
        if default is not None and not (balance_on if default == "balance" else card_on):
            raise ApiError(
                "default_method_disabled",
                422,
                f"The default payment method ({default}) must be enabled; enable it or name "
                "another default in the same request.",
            )
        threshold = changes.get("low_balance_threshold", current.low_balance_threshold_cents)
        emails = changes.get("notification_emails", row.notification_emails if row else None)
        if emails is not None:
            emails = list(dict.fromkeys(emails))  # keep order, drop repeats
        values = {
            "balance_payments_enabled": balance_on,
            "card_payments_enabled": card_on,
            "default_payment_method": default,
            "low_balance_threshold_cents": threshold,
            "notification_emails": emails,
        }
        if row is None:
            row = FinanceSettings(account_id=principal.account_id, **values)
            session.add(row)
        else:
            for name, value in values.items():
                setattr(row, name, value)
        await session.flush()
        return settings_of(row, principal.account)

    try:
        return await in_transaction(session, work)
    except IntegrityError:  # two first-time PATCHes raced to create the row: the loser retries
        return await in_transaction(session, work)


@dataclass(frozen=True)
class BalanceView:
    balance_cents: int
    low_balance_threshold_cents: int | None

    @property
    def below_threshold(self) -> bool:
        threshold = self.low_balance_threshold_cents
        return threshold is not None and self.balance_cents < threshold


_BALANCE = """
    SELECT (SELECT balance_cents FROM account_balance WHERE account_id = $1),
           (SELECT low_balance_threshold_cents FROM finance_settings WHERE account_id = $1)
"""


async def get_balance(engine: AsyncEngine, principal: Principal) -> BalanceView:
    """One statement, so one consistent snapshot, without a transaction around it."""
    async with raw_connection(engine) as conn:
        balance, threshold = await conn.fetchrow(_BALANCE, principal.account_id)
    return BalanceView(balance or 0, threshold)


# Deposits


async def create_deposit(
    session: AsyncSession,
    settings: Settings,
    gateway: Gateway,
    principal: Principal,
    amount_cents: int,
    idempotency_key: str,
) -> Deposit:
    if not settings.deposit_min_cents <= amount_cents <= settings.deposit_max_cents:
        raise ApiError(
            "amount_out_of_range",
            422,
            f"Deposits must be between {format_amount(settings.deposit_min_cents)} and "
            f"{format_amount(settings.deposit_max_cents)} USD.",
        )
    async with session.begin():
        # A retry that took over an abandoned key finds the deposit it already made.
        existing = await session.scalar(
            select(Deposit).where(
                Deposit.account_id == principal.account_id,
                Deposit.idempotency_key == idempotency_key,
            )
        )
        if existing is not None:
            return existing
        card = await session.get(Card, principal.account_id)
        if card is None:
            raise ApiError("no_card_on_file", 409, "Add a card before depositing.")
        deposit = Deposit(
            id=new_id("dep"),
            account_id=principal.account_id,
            idempotency_key=idempotency_key,
            amount_cents=amount_cents,
            status="pending",
            card_brand=card.brand,
            card_last4=card.last4,
        )
        session.add(deposit)
        card_token = card.gateway_token
    try:
        charge = await gateway.charge(
            card_token,
            amount_cents,
            idempotency_key=deposit_charge_key(deposit.id),
            description=f"Deposit {deposit.id}",
        )
    except CardDeclined as declined:
        return await settle_deposit(session, deposit.id, None, declined.decline_code)
    except GatewayUnavailable:
        logger.warning("deposit %s: gateway outcome unknown, left pending", deposit.id)
        return deposit
    return await settle_deposit(session, deposit.id, charge, None)


def deposit_charge_key(deposit_id: str) -> str:
    return f"deposit:{deposit_id}:charge"


async def settle_deposit(
    session: AsyncSession, deposit_id: str, charge: Charge | None, decline_code: str | None
) -> Deposit:
    """Record the gateway's definite answer for a pending deposit: credit the balance (a
    succeeded charge) or fail it (None). Exactly once: only a pending deposit changes, in the
    same transaction as its ledger entry, so a reconciler racing us cannot credit twice."""

    async def work() -> Deposit:
        now = datetime.now(UTC)
        deposit: Deposit | None
        if charge is not None and charge.status == "succeeded":
            deposit = await session.scalar(
                update(Deposit)
                .where(Deposit.id == deposit_id, Deposit.status == "pending")
                .values(status="succeeded", gateway_charge_id=charge.charge_id, settled_at=now)
                .returning(Deposit)
            )
            if deposit is not None:
                posting = await post_entry(
                    await driver_connection(session),
                    account_id=deposit.account_id,
                    type="deposit",
                    amount_cents=deposit.amount_cents,
                    deposit_id=deposit.id,
                    description=f"Deposit by card {deposit.card_brand} ending {deposit.card_last4}",
                )
                assert posting is not None  # a credit always posts
                deposit.balance_after_cents = posting.balance_after_cents
                await session.flush()
        else:
            deposit = await session.scalar(
                update(Deposit)
                .where(Deposit.id == deposit_id, Deposit.status == "pending")
                .values(
                    status="failed",
                    failure_code="card_declined",
                    decline_code=decline_code or "generic_decline",
                    settled_at=now,
                )
                .returning(Deposit)
            )
        if deposit is None:  # settled already, by a reconciler or an earlier call
            deposit = await session.get_one(Deposit, deposit_id, populate_existing=True)
        return deposit

    return await in_transaction(session, work)


async def list_deposits(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> tuple[list[Deposit], bool]:
    async with session.begin():
        query = select(Deposit).where(Deposit.account_id == principal.account_id)
        return await paginate(session, query, Deposit, page)


async def get_deposit(session: AsyncSession, principal: Principal, deposit_id: str) -> Deposit:
    async with session.begin():
        deposit = await session.scalar(
            select(Deposit).where(
                Deposit.id == deposit_id, Deposit.account_id == principal.account_id
            )
        )
    if deposit is None:
        raise NotFound("deposit")
    return deposit


async def render_deposit_pdf(
    session: AsyncSession, settings: Settings, principal: Principal, deposit_id: str
) -> bytes:
    deposit = await get_deposit(session, principal, deposit_id)
    async with session.begin():
        billing = await session.get(BillingInfo, principal.account_id)
    return await render_pdf(
        settings, deposit_receipt(deposit, billed_to(principal.account, billing))
    )


def deposit_receipt(deposit: Deposit, billed: list[str]) -> Receipt:
    if deposit.status == "failed":
        status = f"Failed: the card was declined ({deposit.decline_code}); nothing was credited"
    elif deposit.status == "pending":
        status = "Pending: waiting for the card network's answer"
    else:
        status = "Succeeded: credited to the prepaid balance"
    return Receipt(
        title="Receipt" if deposit.status == "succeeded" else "Deposit",
        number=deposit.id,
        issued_at=deposit.created_at,
        details=[("Date", f"{deposit.created_at.astimezone(UTC):%Y-%m-%d}"), ("Status", status)],
        billed_to=billed,
        lines=[ReceiptLine("Deposit to the prepaid account balance", deposit.amount_cents)],
        total_cents=deposit.amount_cents,
        payment_method=card_label(deposit.card_brand, deposit.card_last4),
    )


async def list_transactions(
    session: AsyncSession, principal: Principal, page: PageRequest
) -> tuple[list[LedgerEntry], bool]:
    async with session.begin():
        query = select(LedgerEntry).where(LedgerEntry.account_id == principal.account_id)
        return await paginate(session, query, LedgerEntry, page)


async def adjust_balance(
    session: AsyncSession, account_id: str, amount_cents: int, reason: str
) -> Posting:
    """An operator's correction: an `adjustment` entry of a signed amount, with its reason. A
    debit larger than the balance is refused, like any other."""

    async def work() -> Posting:
        if await session.get(Account, account_id) is None:
            raise NotFound("account")
        posting = await post_entry(
            await driver_connection(session),
            account_id=account_id,
            type="adjustment",
            amount_cents=amount_cents,
            description=f"Adjustment: {reason}",
        )
        if posting is None:
            raise ApiError(
                "insufficient_funds", 402, "The balance is too low for this debit; nothing moved."
            )
        return posting

    return await in_transaction(session, work)
