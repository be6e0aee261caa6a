"""HTTP endpoints of products and certificate orders."""

from fastapi import APIRouter, Response

from app.auth.principal import MemberCaller, RequireMember
from app.deps import GatewayDep
from app.kit.errors import ApiError, errors
from app.kit.pagination import Page, PageParams
from app.kit.routing import IDEMPOTENCY_REQUIRED, ApiRoute, IdempotencyClaimDep, Unit
from app.orders import service
from app.orders.models import CertificateOrder, OrderDraft, OrderStatus, Product
from app.orders.schemas import OrderIn, OrderOut, ProductList, ProductOut, order_out

router = APIRouter(prefix="/v1", tags=["orders"], route_class=ApiRoute)


def _product_out(product: Product) -> ProductOut:
    return ProductOut(
        id=product.id,
        name=product.name,
        validation=product.validation,
        wildcard=product.wildcard,
        price_per_year=product.price_per_year_cents,
        price_per_extra_san=product.price_per_extra_san_cents,
    )


@router.get("/products", response_model=ProductList, summary="The certificate catalogue")
async def list_products(principal: RequireMember, unit: Unit) -> ProductList:
    return ProductList(data=[_product_out(p) for p in await service.list_products(unit)])


def _order_answer(order: CertificateOrder | OrderDraft) -> Response:
    # 202: the card's answer is not known yet (SPEC §9).
    status = 202 if order.status == OrderStatus.PENDING_PAYMENT else 201
    return Response(order_out(order).model_dump_json(), status, media_type="application/json")


@router.post(
    "/orders",
    status_code=201,
    response_model=OrderOut,
    openapi_extra=IDEMPOTENCY_REQUIRED,
    responses={
        202: {"model": OrderOut, "description": "Card charge outcome unknown yet"},
        **errors(
            {
                402: "insufficient_funds, card_declined",
                403: "payment_method_not_allowed",
                409: "no_card_on_file",
                422: "payment_method_required, payment_method_disabled",
            }
        ),
    },
    summary="Order a certificate, paid from the balance or by card",
)
async def create_order(
    body: OrderIn,
    caller: MemberCaller,
    unit: Unit,
    gateway: GatewayDep,
    claim: IdempotencyClaimDep,
) -> Response:
    placed = await service.create_order(unit, gateway, caller, body, claim, _order_answer)
    order = placed.order
    if order.status == OrderStatus.FAILED:
        raise ApiError(
            "card_declined",
            402,
            "The card was declined; the order was not paid.",
            extra={"decline_code": order.decline_code, "order_id": order.id},
        )
    return placed.answer or _order_answer(order)


@router.get("/orders", response_model=Page[OrderOut], summary="List orders")
async def list_orders(principal: RequireMember, unit: Unit, page: PageParams) -> Page[OrderOut]:
    orders, has_more = await service.list_orders(unit, principal, page)
    return Page(data=[order_out(order) for order in orders], has_more=has_more)


@router.get("/orders/{order_id}", response_model=OrderOut, summary="An order")
async def get_order(order_id: str, principal: RequireMember, unit: Unit) -> OrderOut:
    return order_out(await service.get_order(unit, principal, order_id))


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderOut,
    summary="Cancel and refund an order",
    responses=errors({409: "order_not_cancelable"}),
)
async def cancel_order(
    order_id: str, principal: RequireMember, unit: Unit, gateway: GatewayDep
) -> OrderOut:
    return order_out(await service.cancel_order(unit, gateway, principal, order_id))
