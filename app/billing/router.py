"""HTTP endpoints of plans, subscriptions and invoices."""

from fastapi import APIRouter, Response

from app.auth.principal import RequireFinance, RequireMember
from app.billing import service
from app.billing.models import Plan
from app.billing.schemas import (
    InvoiceOut,
    PlanList,
    PlanOut,
    SubscriptionIn,
    SubscriptionOut,
    invoice_out,
)
from app.billing.service import SubscriptionView
from app.deps import ClockDep, SettingsDep
from app.kit.pagination import Page, PageParams
from app.kit.routing import ApiRoute, Unit
from app.receipts import PDF_RESPONSES, pdf_response

router = APIRouter(prefix="/v1", tags=["billing"], route_class=ApiRoute)


def _plan_out(plan: Plan) -> PlanOut:
    return PlanOut(id=plan.id, name=plan.name, monthly_price=plan.monthly_price_cents)


def _subscription_out(view: SubscriptionView) -> SubscriptionOut:
    subscription = view.subscription
    period = view.current_period
    return SubscriptionOut(
        id=subscription.id,
        plan_id=subscription.plan_id,
        monthly_price=subscription.plan.monthly_price_cents,
        status=view.status,
        started_at=subscription.started_at,
        current_period_start=period[0] if period else None,
        current_period_end=period[1] if period else None,
        canceled_at=subscription.canceled_at,
        ended_at=subscription.ended_at,
        created_at=subscription.created_at,
    )


@router.get("/plans", response_model=PlanList, summary="The plans one can subscribe to")
async def list_plans(principal: RequireMember, unit: Unit) -> PlanList:
    return PlanList(data=[_plan_out(plan) for plan in await service.list_plans(unit)])


@router.post(
    "/subscriptions",
    status_code=201,
    response_model=SubscriptionOut,
    summary="Subscribe to a plan, billed monthly in arrears for the time it runs",
)
async def create_subscription(
    body: SubscriptionIn, principal: RequireFinance, unit: Unit, clock: ClockDep
) -> SubscriptionOut:
    view = await service.create_subscription(unit, clock, principal, body)
    return _subscription_out(view)


@router.get("/subscriptions", response_model=Page[SubscriptionOut], summary="List subscriptions")
async def list_subscriptions(
    principal: RequireFinance, unit: Unit, clock: ClockDep, page: PageParams
) -> Page[SubscriptionOut]:
    views, has_more = await service.list_subscriptions(unit, clock, principal, page)
    return Page(data=[_subscription_out(view) for view in views], has_more=has_more)


@router.get(
    "/subscriptions/{subscription_id}", response_model=SubscriptionOut, summary="A subscription"
)
async def get_subscription(
    subscription_id: str, principal: RequireFinance, unit: Unit, clock: ClockDep
) -> SubscriptionOut:
    view = await service.get_subscription(unit, clock, principal, subscription_id)
    return _subscription_out(view)


@router.delete(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionOut,
    summary="End a subscription now (its last month is billed up to this moment)",
)
async def cancel_subscription(
    subscription_id: str, principal: RequireFinance, unit: Unit, clock: ClockDep
) -> SubscriptionOut:
    view = await service.cancel_subscription(unit, clock, principal, subscription_id)
    return _subscription_out(view)


@router.get("/invoices", response_model=Page[InvoiceOut], summary="List invoices")
async def list_invoices(
    principal: RequireFinance, unit: Unit, page: PageParams
) -> Page[InvoiceOut]:
    invoices, has_more = await service.list_invoices(unit, principal, page)
    return Page(data=[invoice_out(invoice) for invoice in invoices], has_more=has_more)


# Before /invoices/{invoice_id}, which would take "inv_x.pdf" for an id.
@router.get(
    "/invoices/{invoice_id}.pdf",
    response_class=Response,
    responses=PDF_RESPONSES,
    summary="An invoice as a PDF (a receipt once paid)",
)
async def get_invoice_pdf(
    invoice_id: str, principal: RequireFinance, unit: Unit, settings: SettingsDep
) -> Response:
    pdf = await service.render_invoice_pdf(unit, settings, principal, invoice_id)
    return pdf_response(pdf, invoice_id)


@router.get("/invoices/{invoice_id}", response_model=InvoiceOut, summary="An invoice")
async def get_invoice(invoice_id: str, principal: RequireFinance, unit: Unit) -> InvoiceOut:
    return invoice_out(await service.get_invoice(unit, principal, invoice_id))
