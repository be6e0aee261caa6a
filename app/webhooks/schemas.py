"""Bodies of webhook endpoints, events and deliveries."""

from typing import Annotated, Any

from pydantic import Field, field_validator

from app.kit.ids import ID_PATTERN
from app.kit.schemas import PatchModel, RequestModel, ResponseModel, Timestamp
from app.webhooks.models import DeliveryStatus, EndpointStatus, EventType

Url = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        json_schema_extra={"format": "https-url"},
        description="An https:// URL on the internet (not this machine, not a private network).",
        examples=["https://example.com/hooks"],
    ),
]
Description = Annotated[str, Field(max_length=500)]
EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, description="The event types sent to this endpoint, at least one."),
]


def _known_event_types(value: object) -> object:
    """Every entry a known type, or one error on `body.events` itself; repeats dropped."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of event types")
    known = {member.value for member in EventType}
    unknown = [entry for entry in value if not isinstance(entry, str) or entry not in known]
    if unknown:
        raise ValueError(
            f"{unknown[0]!r} is not an event type; use any of: {', '.join(sorted(known))}"
        )
    return list(dict.fromkeys(value))


class EndpointIn(RequestModel):
    url: Url
    events: EventTypes
    description: Description | None = None

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: object) -> object:
        return _known_event_types(value)


class EndpointPatch(PatchModel):
    required_fields = frozenset({"url", "events", "status"})

    url: Url | None = None
    events: EventTypes | None = None
    description: Description | None = None
    status: EndpointStatus | None = None

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: object) -> object:
        return value if value is None else _known_event_types(value)


class EndpointOut(ResponseModel):
    id: str
    url: str
    events: list[EventType]
    description: str | None
    status: EndpointStatus
    created_at: Timestamp


class EndpointWithSecret(EndpointOut):
    secret: str = Field(
        description="The signing secret (`whsec_…`), shown only when created or rotated."
    )


class SecretOut(ResponseModel):
    id: str
    secret: str
    previous_secret_expires_at: Timestamp


class EventOut(ResponseModel):
    id: str
    type: EventType
    created_at: Timestamp
    data: dict[str, Any] = Field(
        description="`object`: the deposit, order, invoice or balance as the API returns it."
    )


class DeliveryOut(ResponseModel):
    id: str
    event_id: str
    event_type: EventType
    attempt: int
    status: DeliveryStatus
    response_status: int | None
    error: str | None = Field(
        description="Why the attempt failed without a 2xx: timeout, connection_failed, "
        "url_not_allowed, redirect_not_followed, endpoint_disabled, not_subscribed."
    )
    created_at: Timestamp
    attempted_at: Timestamp | None
    next_attempt_at: Timestamp | None


class ResendIn(RequestModel):
    event_id: Annotated[str, Field(pattern=ID_PATTERN, examples=["evt_7ls5uwjqkybrmb4xkyzoxd3gmu"])]
