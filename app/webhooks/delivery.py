"""Delivering events: the worker's handler of the outbox topic `webhook`.

One outbox message carries an event to one endpoint until it succeeds or is given up. Each
try is the endpoint's waiting (`pending`) attempt of that event: it is signed afresh, POSTed
with a 10 s limit to the address the URL rules checked, redirects not followed, and
recorded with the outbox message in one transaction: a 2xx succeeds; anything else fails
and, while the retry schedule lasts, leaves the next attempt waiting. A worker that dies
mid-delivery records nothing; its lease runs out and the same attempt is sent again under
the same `webhook-id` (at least once). Five days of nothing but failures disable the
endpoint.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select, text, update

from app.config import Settings
from app.kit import outbox
from app.kit.db import Database, UnitOfWork
from app.metrics import WEBHOOK_DELIVERIES
from app.webhooks import signing
from app.webhooks.models import (
    DeliveryStatus,
    EndpointStatus,
    EventType,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from app.webhooks.schemas import EventOut
from app.webhooks.urls import UrlGuard, UrlRefused

logger = logging.getLogger(__name__)

USER_AGENT = "billing-api-webhooks/1"


@dataclass(frozen=True)
class _Attempt:
    """What one try needs, read in one transaction."""

    delivery_id: str
    endpoint_id: str
    event_id: str
    event_type: EventType
    number: int
    url: str
    secrets: list[str]
    body: str


@dataclass(frozen=True)
class _Answer:
    response_status: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.response_status is not None and 200 <= self.response_status < 300


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        guard: UrlGuard | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.guard = guard or UrlGuard(frozenset(settings.webhook_allowed_hosts))
        # No proxy from the environment (it would connect elsewhere than the address the
        # rules checked), no redirects.
        self.client = client or httpx.AsyncClient(
            trust_env=False, follow_redirects=False, timeout=settings.webhook_timeout_seconds
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def deliver(self, message: outbox.Claimed) -> None:
        attempt = await self.database.run(lambda unit: self._prepare(unit, message))
        if attempt is None:
            WEBHOOK_DELIVERIES.labels("dropped").inc()
            return
        answer = await self._post(attempt)
        outcome = await self.database.run(lambda unit: self._record(unit, message, attempt, answer))
        WEBHOOK_DELIVERIES.labels(outcome).inc()

    async def _prepare(self, unit: UnitOfWork, message: outbox.Claimed) -> _Attempt | None:
        """The waiting attempt, or None when there is nothing to deliver any more (the
        endpoint deleted, disabled or no longer subscribed: the attempt is failed with why)."""
        session = unit.session
        endpoint_id, event_id = message.payload["endpoint_id"], message.payload["event_id"]
        delivery = await session.scalar(
            select(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == endpoint_id,
                WebhookDelivery.event_id == event_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
            )
        )
        # Deleted endpoints and pruned events take their attempts with them.
        endpoint = await session.get(WebhookEndpoint, endpoint_id)
        event = await session.get(WebhookEvent, event_id)
        if delivery is None or endpoint is None or event is None:
            await outbox.mark_done(unit, message, outbox.OutboxStatus.DROPPED)
            return None
        why_not = (
            "endpoint_disabled"
            if endpoint.status != EndpointStatus.ENABLED
            else "not_subscribed"
            if event.type.value not in endpoint.events
            else None
        )
        if why_not is not None:
            delivery.status = DeliveryStatus.FAILED
            delivery.error = why_not
            delivery.next_attempt_at = None
            await session.flush()
            await outbox.mark_done(unit, message, outbox.OutboxStatus.DROPPED)
            return None
        key = self.settings.secret_key
        secrets_ = [signing.endpoint_secret(key, endpoint.secret_seed)]
        expires = endpoint.previous_secret_expires_at
        if endpoint.previous_secret_seed is not None and expires and expires > _now():
            secrets_.append(signing.endpoint_secret(key, endpoint.previous_secret_seed))
        return _Attempt(
            delivery.id,
            endpoint.id,
            event.id,
            event.type,
            delivery.attempt,
            endpoint.url,
            secrets_,
            EventOut.model_validate(event).model_dump_json(),
        )

    async def _post(self, attempt: _Attempt) -> _Answer:
        """One try; the time limit covers the whole of it, name resolution included (so the
        outbox lease, longer than that limit, always outlasts it). The body is not read."""
        try:
            async with asyncio.timeout(self.settings.webhook_timeout_seconds):
                return await self._resolve_and_post(attempt)
        except (TimeoutError, httpx.TimeoutException):
            return _Answer(None, "timeout")
        except httpx.HTTPError as error:
            logger.info("webhook %s to %s: %s", attempt.event_id, attempt.endpoint_id, error)
            return _Answer(None, "connection_failed")

    async def _resolve_and_post(self, attempt: _Attempt) -> _Answer:
        try:
            target = await self.guard.target(attempt.url)
        except UrlRefused as refused:
            # The endpoint's id, not its URL: a URL may carry a partner's token.
            logger.warning(
                "webhook %s to %s refused: %s", attempt.event_id, attempt.endpoint_id, refused
            )
            return _Answer(None, "url_not_allowed")
        at = _now()
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": attempt.event_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signing.signature_header(
                attempt.secrets, attempt.event_id, at, attempt.body
            ),
            **target.headers,
        }
        async with self.client.stream(
            "POST",
            target.url,
            content=attempt.body.encode(),
            headers=headers,
            extensions=target.extensions,
        ) as response:
            status = response.status_code
        return _Answer(status, "redirect_not_followed" if 300 <= status < 400 else None)

    async def _record(
        self, unit: UnitOfWork, message: outbox.Claimed, attempt: _Attempt, answer: _Answer
    ) -> str:
        """The attempt's outcome, the next attempt or the end, and the outbox message, in one
        transaction. The endpoint's row is locked first (as a resend does)."""
        session = unit.session
        failing_since = await session.scalar(_MARK_ENDPOINT, {
            "id": attempt.endpoint_id, "succeeded": answer.succeeded
        })  # fmt: skip
        values: dict[str, object] = {
            "status": DeliveryStatus.SUCCEEDED if answer.succeeded else DeliveryStatus.FAILED,
            "response_status": answer.response_status,
            "error": answer.error,
            "attempted_at": _now(),
            "next_attempt_at": None,  # for a pending one it was when; now it is the next's
        }
        if answer.succeeded or failing_since is None:  # succeeded, or the endpoint is gone
            await self._close(unit, attempt, values)
            await outbox.mark_done(unit, message)
            return "succeeded" if answer.succeeded else "dropped"
        disable_after = timedelta(seconds=self.settings.webhook_disable_after_seconds)
        if _now() - failing_since >= disable_after:
            await session.execute(
                update(WebhookEndpoint)
                .where(WebhookEndpoint.id == attempt.endpoint_id)
                .values(status=EndpointStatus.DISABLED)
            )
            logger.warning("webhook endpoint %s disabled: failing for 5 days", attempt.endpoint_id)
            await self._close(unit, attempt, values)
            await outbox.mark_done(unit, message, outbox.OutboxStatus.DROPPED)
            return "failed"
        schedule = self.settings.webhook_retry_schedule
        if attempt.number > len(schedule):
            await self._close(unit, attempt, values)
            await outbox.mark_failed(
                unit, message, f"gave up after {attempt.number} attempts", retry_in=None
            )
            return "failed"
        delay = schedule[attempt.number - 1]
        next_at = _now() + timedelta(seconds=delay)
        if await self._close(unit, attempt, {**values, "next_attempt_at": next_at}):
            session.add(
                WebhookDelivery(
                    endpoint_id=attempt.endpoint_id,
                    event_id=attempt.event_id,
                    event_type=attempt.event_type,
                    attempt=attempt.number + 1,
                    status=DeliveryStatus.PENDING,
                    next_attempt_at=next_at,
                )
            )
            await session.flush()
        reason = f"HTTP {answer.response_status}" if answer.response_status else answer.error
        await outbox.mark_failed(unit, message, reason or "failed", retry_in=delay)
        return "failed"

    @staticmethod
    async def _close(unit: UnitOfWork, attempt: _Attempt, values: dict[str, object]) -> bool:
        """Settle the waiting attempt; False if another worker (one whose lease ran out on
        this message) settled it first."""
        result = await unit.session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == attempt.delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
            )
            .values(**values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


# The endpoint's failing streak: ended by a success, started by a first failure. Returns
# when the streak started (None after a success, or when the endpoint is gone).
_MARK_ENDPOINT = text(
    """
    UPDATE webhook_endpoint
    SET failing_since = CASE WHEN :succeeded THEN NULL
                             ELSE COALESCE(failing_since, clock_timestamp()) END
    WHERE id = :id
    RETURNING failing_since
    """
)


def _now() -> datetime:
    return datetime.now(UTC)


async def webhook_queue_age(unit: UnitOfWork) -> float:
    """Seconds the oldest due attempt has waited past its time."""
    late = await unit.session.scalar(
        text(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(next_attempt_at))"
            " FROM webhook_delivery"
            " WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()"
        )
    )
    return max(0.0, float(late or 0))
