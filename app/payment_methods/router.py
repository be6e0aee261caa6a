"""HTTP endpoints of the card on file."""

from fastapi import APIRouter, Response

from app.auth.principal import RequireCardHolder, RequireFinance
from app.deps import GatewayDep
from app.kit.errors import errors
from app.kit.routing import ApiRoute, Unit
from app.payment_methods import service
from app.payment_methods.schemas import CardDetailsIn, CardOut, CardTokenIn

router = APIRouter(prefix="/v1/account/card", tags=["card on file"], route_class=ApiRoute)


@router.get("", response_model=CardOut, summary="The card on file")
async def get_card(principal: RequireFinance, unit: Unit) -> CardOut:
    return CardOut.model_validate(await service.get_card(unit, principal))


@router.put(
    "",
    response_model=CardOut,
    summary="Verify a card and keep it on file",
    responses=errors(
        {
            402: "card_declined",
            422: "invalid_card_number, card_expired",
            503: "gateway_unavailable (Retry-After)",
        }
    ),
)
async def replace_card(
    body: CardDetailsIn | CardTokenIn,
    principal: RequireCardHolder,
    unit: Unit,
    gateway: GatewayDep,
) -> CardOut:
    return CardOut.model_validate(await service.replace_card(unit, gateway, principal, body))


@router.delete(
    "",
    status_code=204,
    summary="Remove the card on file",
    responses=errors({409: "card_is_default"}),
)
async def delete_card(principal: RequireCardHolder, unit: Unit) -> Response:
    await service.remove_card(unit, principal)
    return Response(status_code=204)
