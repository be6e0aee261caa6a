"""HTTP endpoints of webhook endpoints (admin), their deliveries, and events (admin and
finance)."""

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from app.auth.principal import RequireAdmin, RequireFinance
from app.deps import SettingsDep
from app.kit.errors import errors
from app.kit.pagination import Page, PageParams
from app.kit.routing import ApiRoute, Provided, Unit, secret_fields
from app.webhooks import service
from app.webhooks.models import EventType, WebhookDelivery, WebhookEndpoint, WebhookEvent
from app.webhooks.schemas import (
    DeliveryOut,
    EndpointIn,
    EndpointOut,
    EndpointPatch,
    EndpointWithSecret,
    EventOut,
    ResendIn,
    SecretOut,
)
from app.webhooks.urls import UrlGuard

router = APIRouter(prefix="/v1", tags=["webhooks"], route_class=ApiRoute)


async def _guard(request: Request) -> UrlGuard:
    guard: UrlGuard = request.app.state.webhook_guard
    return guard


Guard = Annotated[UrlGuard, Provided(_guard)]


def endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    return EndpointOut.model_validate(endpoint)


def event_out(event: WebhookEvent) -> EventOut:
    return EventOut.model_validate(event)


def _delivery_out(delivery: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut.model_validate(delivery)


@router.post(
    "/webhook-endpoints",
    status_code=201,
    response_model=EndpointWithSecret,
    openapi_extra=secret_fields("secret"),
    summary="Add a webhook endpoint (its secret is shown this once)",
    responses=errors({422: "webhook_url_not_allowed, too_many_webhook_endpoints"}),
)
async def create_webhook_endpoint(
    body: EndpointIn, principal: RequireAdmin, unit: Unit, settings: SettingsDep, guard: Guard
) -> EndpointWithSecret:
    endpoint, secret = await service.create_endpoint(unit, settings, guard, principal, body)
    return EndpointWithSecret(**endpoint_out(endpoint).model_dump(), secret=secret)


@router.get(
    "/webhook-endpoints", response_model=Page[EndpointOut], summary="List webhook endpoints"
)
async def list_webhook_endpoints(
    principal: RequireAdmin, unit: Unit, page: PageParams
) -> Page[EndpointOut]:
    endpoints, has_more = await service.list_endpoints(unit, principal, page)
    return Page(data=[endpoint_out(e) for e in endpoints], has_more=has_more)


@router.get(
    "/webhook-endpoints/{endpoint_id}", response_model=EndpointOut, summary="A webhook endpoint"
)
async def get_webhook_endpoint(
    endpoint_id: str, principal: RequireAdmin, unit: Unit
) -> EndpointOut:
    return endpoint_out(await service.get_endpoint(unit, principal, endpoint_id))


@router.patch(
    "/webhook-endpoints/{endpoint_id}",
    response_model=EndpointOut,
    summary="Change a webhook endpoint's URL, events, description or status",
    responses=errors({422: "webhook_url_not_allowed"}),
)
async def update_webhook_endpoint(
    endpoint_id: str, body: EndpointPatch, principal: RequireAdmin, unit: Unit, guard: Guard
) -> EndpointOut:
    return endpoint_out(await service.update_endpoint(unit, guard, principal, endpoint_id, body))


@router.delete(
    "/webhook-endpoints/{endpoint_id}", status_code=204, summary="Delete a webhook endpoint"
)
async def delete_webhook_endpoint(
    endpoint_id: str, principal: RequireAdmin, unit: Unit
) -> Response:
    await service.delete_endpoint(unit, principal, endpoint_id)
    return Response(status_code=204)


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    response_model=SecretOut,
    openapi_extra=secret_fields("secret"),
    summary="A new signing secret; the old one still signs for 24 hours",
)
async def rotate_webhook_secret(
    endpoint_id: str, principal: RequireAdmin, unit: Unit, settings: SettingsDep
) -> SecretOut:
    endpoint, secret = await service.rotate_secret(unit, settings, principal, endpoint_id)
    assert endpoint.previous_secret_expires_at is not None
    return SecretOut(
        id=endpoint.id,
        secret=secret,
        previous_secret_expires_at=endpoint.previous_secret_expires_at,
    )


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    response_model=Page[DeliveryOut],
    summary="Delivery attempts to a webhook endpoint, newest first",
)
async def list_webhook_deliveries(
    endpoint_id: str, principal: RequireAdmin, unit: Unit, page: PageParams
) -> Page[DeliveryOut]:
    deliveries, has_more = await service.list_deliveries(unit, principal, endpoint_id, page)
    return Page(data=[_delivery_out(d) for d in deliveries], has_more=has_more)


@router.post(
    "/webhook-endpoints/{endpoint_id}/resend",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send an event to a webhook endpoint again",
    responses=errors({409: "webhook_endpoint_disabled, webhook_event_not_subscribed"}),
)
async def resend_webhook_event(
    endpoint_id: str, body: ResendIn, principal: RequireAdmin, unit: Unit, settings: SettingsDep
) -> DeliveryOut:
    return _delivery_out(
        await service.resend(unit, settings, principal, endpoint_id, body.event_id)
    )


@router.get("/events", response_model=Page[EventOut], summary="Events of the last 30 days")
async def list_events(
    principal: RequireFinance,
    unit: Unit,
    settings: SettingsDep,
    page: PageParams,
    type: Annotated[EventType | None, Query(description="Only events of this type.")] = None,
) -> Page[EventOut]:
    events, has_more = await service.list_events(unit, settings, principal, page, type)
    return Page(data=[event_out(e) for e in events], has_more=has_more)


@router.get("/events/{event_id}", response_model=EventOut, summary="An event")
async def get_event(
    event_id: str, principal: RequireFinance, unit: Unit, settings: SettingsDep
) -> EventOut:
    return event_out(await service.get_event(unit, settings, principal, event_id))
