"""Rules of money held: payment settings, the balance, deposits and the ledger.

A deposit is a two-phase payment (`app.kit.payments`): recorded pending, the card charged
under `deposit:{id}:charge` outside any transaction, then settled once, here or by the
reconciler. A timeout or a gateway error leaves it pending and credits nothing.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from app.accounts.models import Account, BillingInfo
from app.auth.principal import Principal
from app.config import Settings
from app.finance.ledger import Posting, post_entry
from app.finance.models import Deposit, DepositStatus, LedgerEntry, LedgerEntryType
from app.finance.schemas import FinanceSettingsPatch, deposit_out
from app.gateway.base import Charge, Gateway
from app.kit import payments
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError, NotFound
from app.kit.ids import new_id
from app.kit.money import format_amount
from app.kit.pagination import PageRequest, paginate
from app.payment_methods.models import Card, FinanceSettings, PaymentMethod
from app.payment_methods.settings import PaymentSettings, load_payment_settings, settings_of
from app.receipts import Receipt, ReceiptLine, billed_to, card_label, render_pdf
from app.webhooks.events import queue_event
from app.webhooks.models import EventType

logger = logging.getLogger(__name__)


async def get_payment_settings(unit: UnitOfWork, principal: Principal) -> PaymentSettings:
    return await load_payment_settings(unit, principal.account_id, principal.account.email)


async def update_payment_settings(
    unit: UnitOfWork, principal: Principal, patch: FinanceSettingsPatch
) -> PaymentSettings:
    session = unit.session
    # The row is locked for the rules below; a first PATCH creates it (two first PATCHes at
    # once: the loser's insert conflicts and waits, then updates what the winner made).
    defaults = settings_of(None, principal.account.email)
    await session.execute(
        insert(FinanceSettings)
        .values(
            account_id=principal.account_id,
            balance_payments_enabled=defaults.balance_payments_enabled,
            card_payments_enabled=defaults.card_payments_enabled,
            default_payment_method=defaults.default_payment_method,
        )
        .on_conflict_do_nothing(index_elements=[FinanceSettings.account_id])
    )
    row = await session.get_one(
        FinanceSettings, principal.account_id, with_for_update=True, populate_existing=True
    )
    current = settings_of(row, principal.account.email)
    changes = {field: getattr(patch, field) for field in patch.model_fields_set}
    balance_on = changes.get("balance_payments_enabled", current.balance_payments_enabled)
    card_on = changes.get("card_payments_enabled", current.card_payments_enabled)
    default = changes.get("default_payment_method", current.default_payment_method)
    if not balance_on and not card_on:
        raise ApiError(
            "no_payment_method_enabled", 422, "At least one payment method must stay enabled."
        )
    if default is not None and not (balance_on if default == PaymentMethod.BALANCE else card_on):
        raise ApiError(
            "default_method_disabled",
            422,
            f"The default payment method ({default}) must be enabled; enable it or name "
            "another default in the same request.",
        )
    emails = changes.get("notification_emails", row.notification_emails)
    if emails is not None:
        emails = list(dict.fromkeys(emails))  # keep order, drop repeats
    row.balance_payments_enabled = balance_on
    row.card_payments_enabled = card_on
    row.default_payment_method = default
    row.low_balance_threshold_cents = changes.get(
        "low_balance_threshold", current.low_balance_threshold_cents
    )
    row.notification_emails = emails
    await session.flush()
    return settings_of(row, principal.account.email)


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


async def get_balance(unit: UnitOfWork, principal: Principal) -> BalanceView:
    """One statement, so one consistent snapshot, without a transaction around it."""
    row = await unit.fetchrow_atomic(_BALANCE, principal.account_id)
    assert row is not None
    return BalanceView(row[0] or 0, row[1])


# Deposits


async def create_deposit(
    unit: UnitOfWork,
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
    session = unit.session
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
        status=DepositStatus.PENDING,
        card_brand=card.brand,
        card_last4=card.last4,
    )
    session.add(deposit)
    await session.flush()
    charge = payments.CardCharge(
        deposit.id,
        deposit_charge_key(deposit.id),
        card.gateway_token,
        amount_cents,
        f"Deposit {deposit.id}",
    )
    settled = await payments.charge_pending(unit, gateway, charge, settle_deposit)
    return settled or deposit


def deposit_charge_key(deposit_id: str) -> str:
    return f"deposit:{deposit_id}:charge"


async def settle_deposit(
    unit: UnitOfWork, deposit_id: str, charge: Charge | None, decline_code: str | None
) -> Deposit:
    """Record the gateway's definite answer for a pending deposit: credit the balance (a
    succeeded charge) or fail it. Exactly once: only a pending deposit changes, in the same
    transaction as its ledger entry, so a reconciler racing us cannot credit twice."""
    session = unit.session
    now = datetime.now(UTC)
    deposit: Deposit | None
    if charge is not None and charge.status == "succeeded":
        deposit = await session.scalar(
            update(Deposit)
            .where(Deposit.id == deposit_id, Deposit.status == DepositStatus.PENDING)
            .values(
                status=DepositStatus.SUCCEEDED, gateway_charge_id=charge.charge_id, settled_at=now
            )
            .returning(Deposit),
            execution_options={"populate_existing": True},
        )
        if deposit is not None:
            posting = await post_entry(
                unit,
                account_id=deposit.account_id,
                type=LedgerEntryType.DEPOSIT,
                amount_cents=deposit.amount_cents,
                deposit_id=deposit.id,
                description=f"Deposit by card {deposit.card_brand} ending {deposit.card_last4}",
            )
            assert posting is not None  # a credit always posts
            deposit.balance_after_cents = posting.balance_after_cents
            await session.flush()
            await queue_event(
                unit, deposit.account_id, EventType.DEPOSIT_SUCCEEDED, deposit_out(deposit)
            )
    else:
        deposit = await session.scalar(
            update(Deposit)
            .where(Deposit.id == deposit_id, Deposit.status == DepositStatus.PENDING)
            .values(
                status=DepositStatus.FAILED,
                failure_code="card_declined",
                decline_code=decline_code or "generic_decline",
                settled_at=now,
            )
            .returning(Deposit),
            execution_options={"populate_existing": True},
        )
        if deposit is not None:
            await queue_event(
                unit, deposit.account_id, EventType.DEPOSIT_FAILED, deposit_out(deposit)
            )
    if deposit is None:  # settled already, by a reconciler or an earlier call
        deposit = await session.get_one(Deposit, deposit_id, populate_existing=True)
    return deposit


async def _pending_deposits(
    unit: UnitOfWork, older_than: timedelta | None
) -> list[payments.Pending]:
    query = select(Deposit).where(Deposit.status == DepositStatus.PENDING)
    rows = await payments.pending_rows(unit, query, Deposit.created_at, older_than)
    return [
        payments.Pending("deposit", d.id, d.account_id, d.amount_cents, d.created_at, wait)
        for d, wait in rows
    ]


DEPOSIT_CHARGES = payments.charge_kind(
    "deposit", _pending_deposits, lambda p: deposit_charge_key(p.ref), lambda _: settle_deposit
)


async def list_deposits(
    unit: UnitOfWork, principal: Principal, page: PageRequest
) -> tuple[list[Deposit], bool]:
    query = select(Deposit).where(Deposit.account_id == principal.account_id)
    return await paginate(unit, query, Deposit, page)


async def get_deposit(unit: UnitOfWork, principal: Principal, deposit_id: str) -> Deposit:
    deposit = await unit.session.scalar(
        select(Deposit).where(Deposit.id == deposit_id, Deposit.account_id == principal.account_id)
    )
    if deposit is None:
        raise NotFound("deposit")
    return deposit


async def render_deposit_pdf(
    unit: UnitOfWork, settings: Settings, principal: Principal, deposit_id: str
) -> bytes:
    deposit = await get_deposit(unit, principal, deposit_id)
    billing = await unit.session.get(BillingInfo, principal.account_id)
    return await render_pdf(
        settings, deposit_receipt(deposit, billed_to(principal.account, billing))
    )


def deposit_receipt(deposit: Deposit, billed: list[str]) -> Receipt:
    if deposit.status == DepositStatus.FAILED:
        status = f"Failed: the card was declined ({deposit.decline_code}); nothing was credited"
    elif deposit.status == DepositStatus.PENDING:
        status = "Pending: waiting for the card network's answer"
    else:
        status = "Succeeded: credited to the prepaid balance"
    return Receipt(
        title="Receipt" if deposit.status == DepositStatus.SUCCEEDED else "Deposit",
        number=deposit.id,
        issued_at=deposit.created_at,
        details=[("Date", f"{deposit.created_at.astimezone(UTC):%Y-%m-%d}"), ("Status", status)],
        billed_to=billed,
        lines=[ReceiptLine("Deposit to the prepaid account balance", deposit.amount_cents)],
        total_cents=deposit.amount_cents,
        payment_method=card_label(deposit.card_brand, deposit.card_last4),
    )


async def list_transactions(
    unit: UnitOfWork, principal: Principal, page: PageRequest
) -> tuple[list[LedgerEntry], bool]:
    query = select(LedgerEntry).where(LedgerEntry.account_id == principal.account_id)
    return await paginate(unit, query, LedgerEntry, page)


async def adjust_balance(
    unit: UnitOfWork, account_id: str, amount_cents: int, reason: str
) -> Posting:
    """An operator's correction: an `adjustment` entry of a signed amount, with its reason. A
    debit larger than the balance is refused, like any other."""
    if await unit.session.get(Account, account_id) is None:
        raise NotFound("account")
    posting = await post_entry(
        unit,
        account_id=account_id,
        type=LedgerEntryType.ADJUSTMENT,
        amount_cents=amount_cents,
        description=f"Adjustment: {reason}",
    )
    if posting is None:
        raise ApiError(
            "insufficient_funds", 402, "The balance is too low for this debit; nothing moved."
        )
    return posting
