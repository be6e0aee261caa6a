"""The payment settings of an account as the rules see them, with a new account's defaults."""

from dataclasses import dataclass

from app.accounts.models import Account
from app.finance.models import FinanceSettings
from app.kit.db import UnitOfWork


@dataclass(frozen=True)
class PaymentSettings:
    balance_payments_enabled: bool
    card_payments_enabled: bool
    default_payment_method: str | None
    low_balance_threshold_cents: int | None
    notification_emails: list[str]

    def enabled(self, method: str) -> bool:
        return self.balance_payments_enabled if method == "balance" else self.card_payments_enabled


def settings_of(row: FinanceSettings | None, account: Account) -> PaymentSettings:
    if row is None:  # a new account: card enabled and preselected, balance off
        return PaymentSettings(
            balance_payments_enabled=False,
            card_payments_enabled=True,
            default_payment_method="card",
            low_balance_threshold_cents=None,
            notification_emails=[account.email],
        )
    return PaymentSettings(
        row.balance_payments_enabled,
        row.card_payments_enabled,
        row.default_payment_method,
        row.low_balance_threshold_cents,
        row.notification_emails if row.notification_emails is not None else [account.email],
    )


async def load_payment_settings(unit: UnitOfWork, account: Account) -> PaymentSettings:
    return settings_of(await unit.session.get(FinanceSettings, account.id), account)
