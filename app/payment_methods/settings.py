"""The payment settings of an account as the rules see them, with a new account's defaults."""

from dataclasses import dataclass

from app.kit.db import UnitOfWork
from app.payment_methods.models import (
    AutoTopUpStatus,
    FinanceSettings,
    PaymentMethod,
    SuspendedReason,
)


@dataclass(frozen=True)
class AutoTopUp:
    """The automatic top-up rule (SPEC §14)."""

    threshold_cents: int
    amount_cents: int
    monthly_limit_cents: int
    status: AutoTopUpStatus
    suspended_reason: SuspendedReason | None


@dataclass(frozen=True)
class PaymentSettings:
    balance_payments_enabled: bool
    card_payments_enabled: bool
    default_payment_method: PaymentMethod | None
    low_balance_threshold_cents: int | None
    notification_emails: list[str]
    auto_top_up: AutoTopUp | None = None

    def enabled(self, method: PaymentMethod) -> bool:
        if method == PaymentMethod.BALANCE:
            return self.balance_payments_enabled
        return self.card_payments_enabled


def settings_of(row: FinanceSettings | None, account_email: str) -> PaymentSettings:
    """The settings stored in `row`, or a new account's; notices go to the account's contact
    email unless other addresses are set."""
    if row is None:  # a new account: card enabled and preselected, balance off
        return PaymentSettings(
            balance_payments_enabled=False,
            card_payments_enabled=True,
            default_payment_method=PaymentMethod.CARD,
            low_balance_threshold_cents=None,
            notification_emails=[account_email],
        )
    return PaymentSettings(
        row.balance_payments_enabled,
        row.card_payments_enabled,
        row.default_payment_method,
        row.low_balance_threshold_cents,
        row.notification_emails if row.notification_emails is not None else [account_email],
        auto_top_up_of(row),
    )


def auto_top_up_of(row: FinanceSettings) -> AutoTopUp | None:
    if row.auto_top_up_status is None:
        return None
    assert row.auto_top_up_threshold_cents is not None
    assert row.auto_top_up_amount_cents is not None
    assert row.auto_top_up_monthly_limit_cents is not None
    return AutoTopUp(
        row.auto_top_up_threshold_cents,
        row.auto_top_up_amount_cents,
        row.auto_top_up_monthly_limit_cents,
        row.auto_top_up_status,
        row.auto_top_up_suspended_reason,
    )


async def suspend_auto_top_up(unit: UnitOfWork, account_id: str, reason: SuspendedReason) -> None:
    """Suspend an active automatic top-up and email the notification addresses once (the
    database function, as the debit that finds no card calls it)."""
    conn = await unit.connection()
    await conn.execute("SELECT suspend_auto_top_up($1, $2)", account_id, reason.value)


async def load_payment_settings(
    unit: UnitOfWork, account_id: str, account_email: str
) -> PaymentSettings:
    return settings_of(await unit.session.get(FinanceSettings, account_id), account_email)
