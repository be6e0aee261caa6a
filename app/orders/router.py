"""HTTP endpoints of products and certificate orders."""

from fastapi import APIRouter, Response

from app.auth.principal import RequireMember
from app.deps import GatewayDep, Session
from app.errors import ApiError
from app.idempotency import IDEMPOTENCY_REQUIRED, IdempotencyKeyDep, IdempotentRoute
from app.orders import service
from app.orders.models import CertificateOrder, Product
from app.orders.schemas import OrderIn, OrderOut, ProductList, ProductOut
from app.pagination import Page, PageParams

router = APIRouter(prefix="/v1", tags=["orders"], route_class=IdempotentRoute)


def _product_out(product: Product) -> ProductOut:
    return ProductOut(
        id=product.id,
        name=product.name,
        validation=product.validation,
        wildcard=product.wildcard,
        price_per_year=product.price_per_year_cents,
        price_per_extra_san=product.price_per_extra_san_cents,
    )


def order_out(order: CertificateOrder) -> OrderOut:
    return OrderOut(
        id=order.id,
        product_id=order.product_id,
        common_name=order.common_name,
        sans=order.sans,
        validity_years=order.validity_years,
        amount=order.amount_cents,
        payment_method=order.payment_method,
        status=order.status,
        failure_code=order.failure_code,
        decline_code=order.decline_code,
        created_at=order.created_at,
        canceled_at=order.canceled_at,
    )


@router.get("/products", response_model=ProductList, summary="The certificate catalogue")
async def list_products(principal: RequireMember, session: Session) -> ProductList:
    return ProductList(data=[_product_out(p) for p in await service.list_products(session)])


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderOut,
    openapi_extra=IDEMPOTENCY_REQUIRED,
    responses={202: {"model": OrderOut, "description": "Card charge outcome unknown yet"}},
    summary="Order a certificate, paid from the balance or by card",
)
async def create_order(
    body: OrderIn,
    principal: RequireMember,
    session: Session,
    gateway: GatewayDep,
    idempotency_key: IdempotencyKeyDep,
    response: Response,
) -> OrderOut:
    order = await service.create_order(session, gateway, principal, body, idempotency_key)
    if order.status == "failed":
        raise ApiError(
            "card_declined",
            402,
            "The card was declined; the order was not paid.",
            extra={"decline_code": order.decline_code, "order_id": order.id},
        )
    if order.status == "pending_payment":
        response.status_code = 202
    return order_out(order)


@router.get("/orders", response_model=Page[OrderOut], summary="List orders")
async def list_orders(
    principal: RequireMember, session: Session, page: PageParams
) -> Page[OrderOut]:
    orders, has_more = await service.list_orders(session, principal, page)
    return Page(data=[order_out(order) for order in orders], has_more=has_more)


@router.get("/orders/{order_id}", response_model=OrderOut, summary="An order")
async def get_order(order_id: str, principal: RequireMember, session: Session) -> OrderOut:
    return order_out(await service.get_order(session, principal, order_id))


@router.post(
    "/orders/{order_id}/cancel", response_model=OrderOut, summary="Cancel and refund an order"
)
async def cancel_order(
    order_id: str, principal: RequireMember, session: Session, gateway: GatewayDep
) -> OrderOut:
    return order_out(await service.cancel_order(session, gateway, principal, order_id))
