"""Rules of webhook endpoints, the events API and redelivery (SPEC §12)."""

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, func, select, text, update

from app.accounts.models import Account
from app.auth.principal import Principal
from app.config import Settings
from app.kit import outbox
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError, NotFound
from app.kit.ids import new_id
from app.kit.pagination import PageRequest, paginate
from app.webhooks import signing
from app.webhooks.models import (
    DeliveryStatus,
    EndpointStatus,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from app.webhooks.schemas import EndpointIn, EndpointPatch
from app.webhooks.urls import UrlGuard

WEBHOOK_TOPIC = "webhook"


async def create_endpoint(
    unit: UnitOfWork, settings: Settings, guard: UrlGuard, principal: Principal, body: EndpointIn
) -> tuple[WebhookEndpoint, str]:
    """The endpoint and its secret (shown this once)."""
    url = await guard.check_at_creation(body.url)
    session = unit.session
    # The account row is the lock (FOR NO KEY UPDATE: orders referencing it are not held
    # up): two creations at once count one after the other.
    await session.execute(
        select(Account.id).where(Account.id == principal.account_id).with_for_update(key_share=True)
    )
    count = await session.scalar(
        select(func.count())
        .select_from(WebhookEndpoint)
        .where(WebhookEndpoint.account_id == principal.account_id)
    )
    limit = settings.webhook_max_endpoints
    if (count or 0) >= limit:
        raise ApiError(
            "too_many_webhook_endpoints",
            422,
            f"An account may have at most {limit} webhook endpoints; delete one first.",
        )
    endpoint = WebhookEndpoint(
        id=new_id("whk"),
        account_id=principal.account_id,
        url=url,
        events=[event.value for event in body.events],
        description=body.description,
        status=EndpointStatus.ENABLED,
        secret_seed=signing.new_seed(),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint, signing.endpoint_secret(settings.secret_key, endpoint.secret_seed)


async def list_endpoints(
    unit: UnitOfWork, principal: Principal, page: PageRequest
) -> tuple[list[WebhookEndpoint], bool]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.account_id == principal.account_id)
    return await paginate(unit, query, WebhookEndpoint, page)


async def get_endpoint(
    unit: UnitOfWork, principal: Principal, endpoint_id: str, *, for_update: bool = False
) -> WebhookEndpoint:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == principal.account_id
    )
    if for_update:
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    endpoint = await unit.session.scalar(query)
    if endpoint is None:
        raise NotFound("webhook endpoint")
    return endpoint


async def update_endpoint(
    unit: UnitOfWork,
    guard: UrlGuard,
    principal: Principal,
    endpoint_id: str,
    patch: EndpointPatch,
) -> WebhookEndpoint:
    url = await guard.check_at_creation(patch.url) if patch.url is not None else None
    endpoint = await get_endpoint(unit, principal, endpoint_id, for_update=True)
    if url is not None:
        endpoint.url = url
    if patch.events is not None:
        endpoint.events = [event.value for event in patch.events]
    if "description" in patch.model_fields_set:
        endpoint.description = patch.description
    if patch.status is not None:
        if patch.status == EndpointStatus.ENABLED:
            endpoint.failing_since = None  # a fresh start: five more days before disabling
        endpoint.status = patch.status
    await unit.session.flush()
    return endpoint


async def delete_endpoint(unit: UnitOfWork, principal: Principal, endpoint_id: str) -> None:
    """Its deliveries go with it; queued ones are dropped when their turn comes."""
    endpoint = await get_endpoint(unit, principal, endpoint_id, for_update=True)
    await unit.session.delete(endpoint)
    await unit.session.flush()


async def rotate_secret(
    unit: UnitOfWork, settings: Settings, principal: Principal, endpoint_id: str
) -> tuple[WebhookEndpoint, str]:
    """A new secret; the one it replaces keeps signing beside it for the overlap (a second
    rotation within it ends the overlap of the first)."""
    endpoint = await get_endpoint(unit, principal, endpoint_id, for_update=True)
    overlap = timedelta(seconds=settings.webhook_secret_overlap_seconds)
    endpoint.previous_secret_seed = endpoint.secret_seed
    endpoint.previous_secret_expires_at = func.clock_timestamp() + overlap
    endpoint.secret_seed = signing.new_seed()
    await unit.session.flush()
    await unit.session.refresh(endpoint, ["previous_secret_expires_at"])
    return endpoint, signing.endpoint_secret(settings.secret_key, endpoint.secret_seed)


# Events


async def list_events(
    unit: UnitOfWork,
    settings: Settings,
    principal: Principal,
    page: PageRequest,
    type: EventType | None,
) -> tuple[list[WebhookEvent], bool]:
    query = select(WebhookEvent).where(
        WebhookEvent.account_id == principal.account_id,
        WebhookEvent.created_at > _retention_start(settings),
    )
    if type is not None:
        query = query.where(WebhookEvent.type == type)
    return await paginate(unit, query, WebhookEvent, page)


async def get_event(
    unit: UnitOfWork, settings: Settings, principal: Principal, event_id: str
) -> WebhookEvent:
    event = await unit.session.scalar(
        select(WebhookEvent).where(
            WebhookEvent.id == event_id,
            WebhookEvent.account_id == principal.account_id,
            WebhookEvent.created_at > _retention_start(settings),
        )
    )
    if event is None:
        raise NotFound("event")
    return event


def _retention_start(settings: Settings) -> ColumnElement[datetime]:
    return func.clock_timestamp() - timedelta(days=settings.webhook_event_retention_days)


# Deliveries


async def list_deliveries(
    unit: UnitOfWork, principal: Principal, endpoint_id: str, page: PageRequest
) -> tuple[list[WebhookDelivery], bool]:
    endpoint = await get_endpoint(unit, principal, endpoint_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    return await paginate(unit, query, WebhookDelivery, page)


async def resend(
    unit: UnitOfWork, settings: Settings, principal: Principal, endpoint_id: str, event_id: str
) -> WebhookDelivery:
    """Send an event to an endpoint again, now: its waiting attempt if it has one, else a
    new one (attempts keep counting). The endpoint's row lock orders this with the worker
    recording an attempt, so there is never a second waiting attempt."""
    endpoint = await get_endpoint(unit, principal, endpoint_id, for_update=True)
    if endpoint.status != EndpointStatus.ENABLED:
        raise ApiError(
            "webhook_endpoint_disabled",
            409,
            "The endpoint is disabled; enable it (PATCH status) before resending to it.",
        )
    event = await get_event(unit, settings, principal, event_id)
    if event.type.value not in endpoint.events:
        raise ApiError(
            "webhook_event_not_subscribed",
            409,
            f"The endpoint does not subscribe to {event.type}; add it to its events first.",
        )
    session = unit.session
    waiting: WebhookDelivery | None = await session.scalar(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint.id,
            WebhookDelivery.event_id == event.id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(next_attempt_at=func.clock_timestamp())
        .returning(WebhookDelivery),
        execution_options={"populate_existing": True},
    )
    if waiting is not None:
        await session.execute(_DUE_NOW, {"endpoint_id": endpoint.id, "event_id": event.id})
        return waiting
    last = await session.scalar(
        select(func.max(WebhookDelivery.attempt)).where(
            WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.event_id == event.id
        )
    )
    delivery = WebhookDelivery(
        endpoint_id=endpoint.id,
        event_id=event.id,
        event_type=event.type,
        attempt=(last or 0) + 1,
        status=DeliveryStatus.PENDING,
        next_attempt_at=func.clock_timestamp(),
    )
    session.add(delivery)
    await session.flush()
    await session.refresh(delivery)
    await outbox.enqueue(unit, WEBHOOK_TOPIC, delivery_message(endpoint.id, event.id))
    return delivery


def delivery_message(endpoint_id: str, event_id: str) -> dict[str, str]:
    """The outbox payload of a delivery (as `queue_webhook_event` writes it)."""
    return {"endpoint_id": endpoint_id, "event_id": event_id}


_DUE_NOW = text(
    """
    UPDATE outbox_message SET available_at = clock_timestamp()
    WHERE status = 'pending' AND topic = 'webhook'
      AND payload = jsonb_build_object('endpoint_id', CAST(:endpoint_id AS text),
                                       'event_id', CAST(:event_id AS text))
    """
)
