"""Rules of money held: payment settings, the balance, deposits and the ledger.

A deposit is a two-phase payment (`app.kit.payments`): recorded pending, the card charged
under `deposit:{id}:charge` outside any transaction, then settled once, here or by the
reconciler. A timeout or a gateway error leaves it pending and credits nothing.
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from app.accounts.models import Account, BillingInfo
from app.auth.models import Integration
from app.auth.principal import Caller, Principal
from app.config import Settings
from app.finance.ledger import Posting, post_entry
from app.finance.models import (
    Deposit,
    DepositSource,
    DepositStatus,
    LedgerEntry,
    LedgerEntryType,
)
from app.finance.schemas import AutoTopUpIn, FinanceSettingsPatch, deposit_out
from app.gateway.base import Charge, Gateway
from app.kit import payments
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError, NotFound, validation_error
from app.kit.ids import new_id
from app.kit.money import format_amount
from app.kit.pagination import PageRequest, paginate
from app.payment_methods.models import (
    AutoTopUpStatus,
    Card,
    FinanceSettings,
    PaymentMethod,
    SuspendedReason,
)
from app.payment_methods.settings import (
    PaymentSettings,
    load_payment_settings,
    settings_of,
    suspend_auto_top_up,
)
from app.receipts import Receipt, ReceiptLine, billed_to, card_label, render_pdf
from app.webhooks.events import queue_event
from app.webhooks.models import EventType

logger = logging.getLogger(__name__)


async def get_payment_settings(unit: UnitOfWork, principal: Principal) -> PaymentSettings:
    return await load_payment_settings(unit, principal.account_id, principal.account.email)


async def update_payment_settings(
    unit: UnitOfWork, settings: Settings, principal: Principal, patch: FinanceSettingsPatch
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
    if "auto_top_up" in changes:
        if principal.integration == Integration.AZURE_KEY_VAULT:
            raise ApiError(
                "payment_method_not_allowed",
                403,
                "Azure Key Vault integrations may only pay from the balance; automatic "
                "top-up charges the card.",
            )
        await _set_auto_top_up(unit, settings, row, changes["auto_top_up"], card_on=card_on)
    elif row.auto_top_up_status is not None and not card_on:
        raise _auto_top_up_needs_card_payments()
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


async def _set_auto_top_up(
    unit: UnitOfWork,
    settings: Settings,
    row: FinanceSettings,
    rule: AutoTopUpIn | None,
    *,
    card_on: bool,
) -> None:
    """Turn the automatic top-up off (None), or on: a new rule, a changed one, or the same
    one saved again, which re-activates it after a suspension."""
    if rule is None:
        row.auto_top_up_threshold_cents = row.auto_top_up_amount_cents = None
        row.auto_top_up_monthly_limit_cents = None
        row.auto_top_up_status = row.auto_top_up_suspended_reason = None
        return
    if not settings.deposit_min_cents <= rule.amount <= settings.deposit_max_cents:
        raise validation_error(
            "body.auto_top_up.amount",
            f"must be between {format_amount(settings.deposit_min_cents)} and "
            f"{format_amount(settings.deposit_max_cents)}, like any deposit",
        )
    if not card_on:
        raise _auto_top_up_needs_card_payments()
    if await unit.session.get(Card, row.account_id) is None:
        raise ApiError("no_card_on_file", 409, "Add a card before turning on automatic top-up.")
    row.auto_top_up_threshold_cents = rule.threshold
    row.auto_top_up_amount_cents = rule.amount
    row.auto_top_up_monthly_limit_cents = rule.monthly_limit
    row.auto_top_up_status = AutoTopUpStatus.ACTIVE
    row.auto_top_up_suspended_reason = None


def _auto_top_up_needs_card_payments() -> ApiError:
    return ApiError(
        "payment_method_disabled",
        422,
        "Automatic top-up charges the card: card payments must stay enabled while it is on "
        "(turn it off in the same request with auto_top_up: null).",
    )


@dataclass(frozen=True)
class BalanceView:
    balance_cents: int
    low_balance_threshold_cents: int | None

    @property
    def below_threshold(self) -> bool:
        threshold = self.low_balance_threshold_cents
        return threshold is not None and self.balance_cents < threshold


# The balance is read along with the caller, in the caller's own statement: one round trip
# in all, and one consistent snapshot.
_BALANCE = """(SELECT balance_cents FROM account_balance WHERE account_id = {account})
        AS balance_cents,
    (SELECT low_balance_threshold_cents FROM finance_settings WHERE account_id = {account})
        AS low_balance_threshold_cents"""


async def get_balance(unit: UnitOfWork, caller: Caller) -> BalanceView:
    row = await caller.along(unit, _BALANCE)
    return BalanceView(row["balance_cents"] or 0, row["low_balance_threshold_cents"])


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
    succeeded charge) or fail it (declined, or never made: no charge and no decline).
    Exactly once: only a pending deposit changes, in the same transaction as its ledger
    entry, so a reconciler racing us cannot credit twice. A declined automatic top-up
    suspends the rule."""
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
            what = "Automatic top-up" if deposit.source == DepositSource.AUTO_TOP_UP else "Deposit"
            posting = await post_entry(
                unit,
                account_id=deposit.account_id,
                type=LedgerEntryType.DEPOSIT,
                amount_cents=deposit.amount_cents,
                deposit_id=deposit.id,
                description=f"{what} by card {deposit.card_brand} ending {deposit.card_last4}",
            )
            assert posting is not None  # a credit always posts
            deposit.balance_after_cents = posting.balance_after_cents
            await session.flush()
            await queue_event(
                unit, deposit.account_id, EventType.DEPOSIT_SUCCEEDED, deposit_out(deposit)
            )
    else:
        declined = charge is not None or decline_code is not None
        failure = (
            ("card_declined", decline_code or "generic_decline")
            if declined
            else (CHARGE_NOT_MADE, None)
        )
        deposit = await _fail_deposit(unit, deposit_id, *failure)
        if deposit is not None and declined and deposit.source == DepositSource.AUTO_TOP_UP:
            await suspend_auto_top_up(unit, deposit.account_id, SuspendedReason.CARD_DECLINED)
    if deposit is None:  # settled already, by a reconciler or an earlier call
        deposit = await session.get_one(Deposit, deposit_id, populate_existing=True)
    return deposit


# No charge was made under the deposit's key (the gateway never got it): nothing to credit,
# and nothing declined.
CHARGE_NOT_MADE = "charge_not_made"


async def _fail_deposit(
    unit: UnitOfWork, deposit_id: str, failure_code: str, decline_code: str | None
) -> Deposit | None:
    """Fail a pending deposit, with deposit.failed; None if it was not pending."""
    deposit: Deposit | None = await unit.session.scalar(
        update(Deposit)
        .where(Deposit.id == deposit_id, Deposit.status == DepositStatus.PENDING)
        .values(
            status=DepositStatus.FAILED,
            failure_code=failure_code,
            decline_code=decline_code,
            settled_at=datetime.now(UTC),
        )
        .returning(Deposit),
        execution_options={"populate_existing": True},
    )
    if deposit is not None:
        await queue_event(unit, deposit.account_id, EventType.DEPOSIT_FAILED, deposit_out(deposit))
    return deposit


# Automatic top-ups (SPEC §14). A debit that crosses the rule's threshold makes the pending
# deposit and an outbox message, in its own transaction (the database function
# `queue_auto_top_up`, which also enforces one pending at a time and the monthly limit).
# The worker then charges it here, exactly like a deposit.

AUTO_TOP_UP_TOPIC = "auto_top_up"


async def charge_auto_top_up(unit: UnitOfWork, gateway: Gateway, deposit_id: str) -> Deposit | None:
    """Charge a pending automatic deposit, once: the first claim marks the charge begun
    (committed before the card is charged); a later claim of the same message (the worker
    died meanwhile) leaves the outcome to the reconciler, which asks the gateway under the
    deposit's key. None if it is not pending any more."""
    deposit = await unit.session.scalar(
        select(Deposit)
        .where(
            Deposit.id == deposit_id,
            Deposit.status == DepositStatus.PENDING,
            Deposit.source == DepositSource.AUTO_TOP_UP,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if deposit is None or deposit.charge_started_at is not None:
        return deposit
    rule = await unit.session.get(FinanceSettings, deposit.account_id)
    if rule is None or rule.auto_top_up_status != AutoTopUpStatus.ACTIVE:
        # Suspended (a declined or removed card) or turned off since it was queued: a
        # suspended rule charges nothing, whatever card is on file now.
        return await _fail_deposit(unit, deposit.id, "auto_top_up_not_active", None)
    card = await unit.session.get(Card, deposit.account_id)
    if card is None:  # removed since: the removal suspended the rule
        failed = await _fail_deposit(unit, deposit.id, "no_card_on_file", None)
        await suspend_auto_top_up(unit, deposit.account_id, SuspendedReason.NO_CARD_ON_FILE)
        return failed
    deposit.card_brand, deposit.card_last4 = card.brand, card.last4
    deposit.charge_started_at = datetime.now(UTC)
    await unit.session.flush()
    charge = payments.CardCharge(
        deposit.id,
        deposit_charge_key(deposit.id),
        card.gateway_token,
        deposit.amount_cents,
        f"Automatic top-up {deposit.id}",
    )
    settled = await payments.charge_pending(unit, gateway, charge, settle_deposit)
    return settled or deposit


async def _pending_deposits(
    unit: UnitOfWork, older_than: timedelta | None
) -> list[payments.Pending]:
    # An automatic top-up is the worker's until it has begun charging it.
    query = select(Deposit).where(
        Deposit.status == DepositStatus.PENDING,
        or_(Deposit.source == DepositSource.API, Deposit.charge_started_at.is_not(None)),
    )
    since = func.coalesce(Deposit.charge_started_at, Deposit.created_at)
    rows = await payments.pending_rows(unit, query, since, older_than)
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


def _receipt_line(deposit: Deposit) -> str:
    if deposit.source == DepositSource.AUTO_TOP_UP:
        return "Automatic top-up of the prepaid account balance"
    return "Deposit to the prepaid account balance"


def deposit_receipt(deposit: Deposit, billed: list[str]) -> Receipt:
    if deposit.status == DepositStatus.FAILED and deposit.decline_code is None:
        status = "Failed: the card was not charged; nothing was credited"
    elif deposit.status == DepositStatus.FAILED:
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
        lines=[ReceiptLine(_receipt_line(deposit), deposit.amount_cents)],
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
