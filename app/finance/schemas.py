"""Bodies of finance settings, the balance, deposits and ledger entries."""

from typing import Annotated, Literal

from pydantic import Field

from app.accounts.schemas import Email
from app.finance.models import Deposit, DepositStatus, LedgerEntryType
from app.kit.money import Amount, AmountIn, AmountOrZeroIn
from app.kit.schemas import PatchModel, RequestModel, ResponseModel, Timestamp
from app.payment_methods.models import PaymentMethod

Currency = Literal["USD"]


class FinanceSettingsOut(ResponseModel):
    balance_payments_enabled: bool
    card_payments_enabled: bool
    default_payment_method: PaymentMethod | None
    low_balance_threshold: Amount | None
    currency: Currency = "USD"
    notification_emails: list[str]


class FinanceSettingsPatch(PatchModel):
    required_fields = frozenset(
        {"balance_payments_enabled", "card_payments_enabled", "notification_emails"}
    )

    balance_payments_enabled: bool | None = None
    card_payments_enabled: bool | None = None
    default_payment_method: PaymentMethod | None = None
    low_balance_threshold: AmountOrZeroIn | None = None
    notification_emails: Annotated[list[Email], Field(max_length=10)] | None = None


class BalanceOut(ResponseModel):
    balance: Amount
    currency: Currency = "USD"
    low_balance_threshold: Amount | None
    below_threshold: bool


class DepositIn(RequestModel):
    amount: AmountIn


class DepositOut(ResponseModel):
    id: str
    amount: Amount
    currency: Currency = "USD"
    status: DepositStatus
    balance_after: Amount | None
    failure_code: str | None
    decline_code: str | None
    created_at: Timestamp


class TransactionOut(ResponseModel):
    id: str
    type: LedgerEntryType
    amount: Amount
    currency: Currency = "USD"
    balance_after: Amount
    deposit_id: str | None
    order_id: str | None
    invoice_id: str | None
    description: str
    created_at: Timestamp


def deposit_out(deposit: Deposit) -> DepositOut:
    return DepositOut(
        id=deposit.id,
        amount=deposit.amount_cents,
        status=deposit.status,
        balance_after=deposit.balance_after_cents,
        failure_code=deposit.failure_code,
        decline_code=deposit.decline_code,
        created_at=deposit.created_at,
    )
