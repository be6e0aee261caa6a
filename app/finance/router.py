"""HTTP endpoints of finance settings, the balance, deposits and the ledger."""

from fastapi import APIRouter, Response

from app.auth.principal import MemberCaller, RequireDepositor, RequireFinance
from app.deps import GatewayDep, SettingsDep
from app.finance import service
from app.finance.models import DepositStatus, LedgerEntry
from app.finance.schemas import (
    AutoTopUpOut,
    BalanceOut,
    DepositIn,
    DepositOut,
    FinanceSettingsOut,
    FinanceSettingsPatch,
    TransactionOut,
    deposit_out,
)
from app.kit.errors import ApiError, errors
from app.kit.pagination import Page, PageParams
from app.kit.routing import IDEMPOTENCY_REQUIRED, ApiRoute, IdempotencyKeyDep, Unit
from app.payment_methods.settings import AutoTopUp, PaymentSettings
from app.receipts import PDF_RESPONSES, pdf_response

router = APIRouter(prefix="/v1/finance", tags=["finance"], route_class=ApiRoute)


def _settings_out(settings: PaymentSettings) -> FinanceSettingsOut:
    return FinanceSettingsOut(
        balance_payments_enabled=settings.balance_payments_enabled,
        card_payments_enabled=settings.card_payments_enabled,
        default_payment_method=settings.default_payment_method,
        low_balance_threshold=settings.low_balance_threshold_cents,
        notification_emails=settings.notification_emails,
        auto_top_up=_auto_top_up_out(settings.auto_top_up),
    )


def _auto_top_up_out(rule: AutoTopUp | None) -> AutoTopUpOut | None:
    if rule is None:
        return None
    return AutoTopUpOut(
        threshold=rule.threshold_cents,
        amount=rule.amount_cents,
        monthly_limit=rule.monthly_limit_cents,
        status=rule.status,
        suspended_reason=rule.suspended_reason,
    )


def _transaction_out(entry: LedgerEntry) -> TransactionOut:
    return TransactionOut(
        id=entry.id,
        type=entry.type,
        amount=entry.amount_cents,
        balance_after=entry.balance_after_cents,
        deposit_id=entry.deposit_id,
        order_id=entry.order_id,
        invoice_id=entry.invoice_id,
        description=entry.description,
        created_at=entry.created_at,
    )


@router.get("/settings", response_model=FinanceSettingsOut, summary="Payment settings")
async def get_finance_settings(principal: RequireFinance, unit: Unit) -> FinanceSettingsOut:
    return _settings_out(await service.get_payment_settings(unit, principal))


@router.patch(
    "/settings",
    response_model=FinanceSettingsOut,
    summary="Change payment settings",
    responses=errors(
        {
            403: "payment_method_not_allowed",
            409: "no_card_on_file",
            422: "no_payment_method_enabled, default_method_disabled, payment_method_disabled",
        }
    ),
)
async def update_finance_settings(
    body: FinanceSettingsPatch, principal: RequireFinance, unit: Unit, settings: SettingsDep
) -> FinanceSettingsOut:
    return _settings_out(await service.update_payment_settings(unit, settings, principal, body))


@router.get("/balance", response_model=BalanceOut, summary="The account balance")
async def get_balance(caller: MemberCaller, unit: Unit) -> BalanceOut:
    view = await service.get_balance(unit, caller)
    return BalanceOut(
        balance=view.balance_cents,
        low_balance_threshold=view.low_balance_threshold_cents,
        below_threshold=view.below_threshold,
    )


@router.post(
    "/deposits",
    status_code=201,
    response_model=DepositOut,
    openapi_extra=IDEMPOTENCY_REQUIRED,
    responses={
        202: {"model": DepositOut, "description": "Outcome unknown yet: pending"},
        **errors(
            {
                402: "card_declined",
                403: "payment_method_not_allowed",
                409: "no_card_on_file",
                422: "amount_out_of_range",
            }
        ),
    },
    summary="Deposit funds: charge the card on file and credit the balance",
)
async def create_deposit(
    body: DepositIn,
    principal: RequireDepositor,
    unit: Unit,
    settings: SettingsDep,
    gateway: GatewayDep,
    idempotency_key: IdempotencyKeyDep,
    response: Response,
) -> DepositOut:
    deposit = await service.create_deposit(
        unit, settings, gateway, principal, body.amount, idempotency_key
    )
    if deposit.status == DepositStatus.FAILED:
        raise ApiError(
            "card_declined",
            402,
            "The card was declined; the deposit failed and nothing was credited.",
            extra={"decline_code": deposit.decline_code, "deposit_id": deposit.id},
        )
    if deposit.status == DepositStatus.PENDING:
        response.status_code = 202
    return deposit_out(deposit)


@router.get("/deposits", response_model=Page[DepositOut], summary="List deposits")
async def list_deposits(
    principal: RequireFinance, unit: Unit, page: PageParams
) -> Page[DepositOut]:
    deposits, has_more = await service.list_deposits(unit, principal, page)
    return Page(data=[deposit_out(deposit) for deposit in deposits], has_more=has_more)


# Before /deposits/{deposit_id}, which would take "dep_x.pdf" for an id.
@router.get(
    "/deposits/{deposit_id}.pdf",
    response_class=Response,
    responses=PDF_RESPONSES,
    summary="A deposit's PDF receipt",
)
async def get_deposit_pdf(
    deposit_id: str, principal: RequireFinance, unit: Unit, settings: SettingsDep
) -> Response:
    pdf = await service.render_deposit_pdf(unit, settings, principal, deposit_id)
    return pdf_response(pdf, deposit_id)


@router.get("/deposits/{deposit_id}", response_model=DepositOut, summary="A deposit")
async def get_deposit(deposit_id: str, principal: RequireFinance, unit: Unit) -> DepositOut:
    return deposit_out(await service.get_deposit(unit, principal, deposit_id))


@router.get(
    "/transactions", response_model=Page[TransactionOut], summary="The ledger, newest first"
)
async def list_transactions(
    principal: RequireFinance, unit: Unit, page: PageParams
) -> Page[TransactionOut]:
    entries, has_more = await service.list_transactions(unit, principal, page)
    return Page(data=[_transaction_out(entry) for entry in entries], has_more=has_more)
