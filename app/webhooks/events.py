"""Raising an event: in the unit's transaction, so it exists exactly when the change it
reports committed. The database function `queue_webhook_event` stores it and queues a
delivery to every enabled endpoint of the account subscribed to its type."""

from pydantic import BaseModel

from app.kit.db import UnitOfWork
from app.webhooks.models import EventType


async def queue_event(unit: UnitOfWork, account_id: str, type: EventType, obj: BaseModel) -> None:
    """`obj` is the object as the API returns it (a DepositOut, an OrderOut…)."""
    conn = await unit.connection()
    await conn.execute(
        "SELECT queue_webhook_event($1, $2, $3::jsonb)",
        account_id,
        type.value,
        obj.model_dump_json(),
    )
