"""Bodies of finance settings, the balance, deposits and ledger entries."""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from app.accounts.schemas import Email
from app.finance.models import Deposit, DepositSource, DepositStatus, LedgerEntryType
from app.kit.money import Amount, AmountIn, AmountOrZeroIn, DepositAmountIn
from app.kit.schemas import PatchModel, RequestModel, ResponseModel, Timestamp
from app.payment_methods.models import AutoTopUpStatus, PaymentMethod, SuspendedReason

Currency = Literal["USD"]


class AutoTopUpOut(ResponseModel):
    threshold: Amount
    amount: Amount
    monthly_limit: Amount
    currency: Currency = "USD"
    status: AutoTopUpStatus
    suspended_reason: SuspendedReason | None


class AutoTopUpIn(RequestModel):
    """Deposit `amount` by card whenever a debit takes the balance below `threshold`, at most
    `monthly_limit` a calendar month (UTC)."""

    threshold: AmountOrZeroIn
    amount: DepositAmountIn
    monthly_limit: AmountIn

    @field_validator("monthly_limit", mode="after")
    @classmethod
    def _limit_holds_one(cls, limit: int, info: ValidationInfo) -> int:
        amount = info.data.get("amount")
        if amount is not None and limit < amount:
            raise ValueError("must be at least amount")
        return limit


class FinanceSettingsOut(ResponseModel):
    balance_payments_enabled: bool
    card_payments_enabled: bool
    default_payment_method: PaymentMethod | None
    low_balance_threshold: Amount | None
    currency: Currency = "USD"
    notification_emails: list[str]
    auto_top_up: AutoTopUpOut | None = Field(description="The automatic top-up (null: off).")


class FinanceSettingsPatch(PatchModel):
    required_fields = frozenset(
        {"balance_payments_enabled", "card_payments_enabled", "notification_emails"}
    )

    balance_payments_enabled: bool | None = None
    card_payments_enabled: bool | None = None
    default_payment_method: PaymentMethod | None = None
    low_balance_threshold: AmountOrZeroIn | None = None
    notification_emails: Annotated[list[Email], Field(max_length=10)] | None = None
    # null turns it off; a rule turns it on, changes it, or re-activates a suspended one.
    auto_top_up: AutoTopUpIn | None = None


class BalanceOut(ResponseModel):
    balance: Amount
    currency: Currency = "USD"
    low_balance_threshold: Amount | None
    below_threshold: bool


class DepositIn(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"amount": "500.00"}]})

    amount: DepositAmountIn


class DepositOut(ResponseModel):
    id: str
    amount: Amount
    currency: Currency = "USD"
    status: DepositStatus
    balance_after: Amount | None
    failure_code: str | None
    decline_code: str | None
    source: DepositSource
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
        source=deposit.source,
        created_at=deposit.created_at,
    )
