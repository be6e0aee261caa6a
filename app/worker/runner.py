"""The worker: drains the outbox, reconciles payments with an unknown outcome, runs the
monthly billing and its retries, and prunes expired rows, each on its own schedule. Any
number of workers may run against one database (in API processes with RUN_WORKER=true, or as
`billing worker`): the outbox is claimed with SKIP LOCKED, every settlement is exactly once,
and an invoice is made and attempted once per account, period and attempt.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta

from sqlalchemy import text

from app.billing.periods import period_of, previous_period
from app.billing.run import BillingReport, collect_due, create_invoices
from app.config import Settings
from app.finance.service import AUTO_TOP_UP_TOPIC, charge_auto_top_up
from app.gateway.base import Gateway
from app.kit import outbox
from app.kit.clock import Clock, SystemClock
from app.kit.db import Database, UnitOfWork
from app.metrics import (
    BILLING_INVOICES,
    OUTBOX_MESSAGES,
    OUTBOX_PENDING,
    RECONCILED,
    WEBHOOK_QUEUE_AGE,
    WORKER_LAST_RUN,
)
from app.webhooks.delivery import WebhookSender, webhook_queue_age
from app.webhooks.service import WEBHOOK_TOPIC
from app.worker.email import EMAIL_TOPIC, Mailer, PermanentFailure, build_message, create_mailer
from app.worker.reconcile import ReconcileReport, reconcile_pending

logger = logging.getLogger(__name__)

# Rows kept past their use: idempotency keys (SPEC §8: at least 24 hours), the login
# history the throttle reads (30 days), and delivered outbox messages (for inspection).
_PRUNE = (
    "DELETE FROM idempotency_key WHERE created_at < clock_timestamp() - interval '25 hours'",
    "DELETE FROM auth_event WHERE created_at < clock_timestamp() - interval '31 days'",
    "DELETE FROM outbox_message WHERE status IN ('delivered', 'logged', 'dropped')"
    " AND delivered_at < clock_timestamp() - interval '30 days'",
)


class Worker:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        gateway: Gateway,
        mailer: Mailer | None = None,
        clock: Clock | None = None,
        webhooks: WebhookSender | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.gateway = gateway
        self.mailer = mailer or create_mailer(settings)
        self.clock = clock or SystemClock()
        self.webhooks = webhooks or WebhookSender(settings, database)

    # One pass of each task: what the schedule runs, and what tests and the CLI call.

    async def deliver_due(self) -> int:
        """Deliver one batch of due outbox messages; returns how many were claimed."""
        batch, lease = self.settings.outbox_batch_size, self.settings.outbox_lease_seconds
        messages = await self.database.run(lambda unit: outbox.claim(unit, batch, lease))
        await asyncio.gather(*(self._deliver(message) for message in messages))
        return len(messages)

    async def reconcile(self) -> ReconcileReport:
        report = await reconcile_pending(
            self.database,
            self.gateway,
            self.clock,
            timedelta(seconds=self.settings.reconcile_after_seconds),
        )
        RECONCILED.labels("settled").inc(report.settled)
        RECONCILED.labels("still_unknown").inc(report.still_unknown)
        return report

    async def bill(self) -> BillingReport:
        """Invoice the month just ended (in arrears, once per account, whoever runs it), then
        make every attempt that is due: first attempts and dunning retries of any period."""
        last_month = previous_period(period_of(self.clock.now()))
        invoiced = await create_invoices(self.database, self.clock, last_month)
        report = await collect_due(
            self.database, self.gateway, self.clock, BillingReport(invoiced=invoiced)
        )
        for result, count in asdict(report).items():
            BILLING_INVOICES.labels(result).inc(count)
        if report != BillingReport():
            logger.info("billing: %s", report)
        return report

    async def prune(self) -> None:
        async def work(unit: UnitOfWork) -> None:
            for statement in _PRUNE:
                await unit.session.execute(text(statement))
            # Events, kept for the events API (SPEC §12: 30 days), with their attempts.
            await unit.session.execute(
                text(
                    "DELETE FROM webhook_event"
                    " WHERE created_at < clock_timestamp() - make_interval(days => :days)"
                ),
                {"days": self.settings.webhook_event_retention_days},
            )

        await self.database.run(work)

    async def _deliver(self, message: outbox.Claimed) -> None:
        try:
            if message.topic == WEBHOOK_TOPIC:
                await self.webhooks.deliver(message)  # its own retry schedule and records
            elif message.topic == AUTO_TOP_UP_TOPIC:
                await self._charge_auto_top_up(message)
            else:
                await self._send_email(message)
        except Exception:
            # Unmarked, the message is taken again when its lease runs out.
            logger.exception("outbox message %s (%s) failed", message.id, message.topic)

    async def _charge_auto_top_up(self, message: outbox.Claimed) -> None:
        """Charged once; an unknown outcome is the reconciler's (SPEC §14)."""
        deposit_id = message.payload["deposit_id"]
        await self.database.run(lambda unit: charge_auto_top_up(unit, self.gateway, deposit_id))
        await self.database.run(lambda unit: outbox.mark_done(unit, message))
        OUTBOX_MESSAGES.labels(message.topic, "delivered").inc()

    async def _send_email(self, message: outbox.Claimed) -> None:
        try:
            if message.topic != EMAIL_TOPIC:
                raise PermanentFailure(f"no handler for topic {message.topic!r}")
            await self.mailer.send(build_message(self.settings, message.id, message.payload))
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            if isinstance(error, PermanentFailure) or (
                message.attempts >= self.settings.outbox_max_attempts
            ):
                logger.error("outbox message %s dead after %s", message.id, reason)
                await self.database.run(
                    lambda unit: outbox.mark_failed(unit, message, reason, retry_in=None)
                )
                OUTBOX_MESSAGES.labels(message.topic, "dead").inc()
                return
            delay = outbox.backoff_seconds(
                message.attempts,
                self.settings.outbox_retry_base_seconds,
                self.settings.outbox_retry_max_seconds,
            )
            logger.warning(
                "outbox message %s attempt %s failed (%s); retry in %.1fs",
                message.id,
                message.attempts,
                reason,
                delay,
            )
            await self.database.run(
                lambda unit: outbox.mark_failed(unit, message, reason, retry_in=delay)
            )
            OUTBOX_MESSAGES.labels(message.topic, "retry").inc()
            return
        await self.database.run(lambda unit: outbox.mark_done(unit, message, self.mailer.outcome))
        OUTBOX_MESSAGES.labels(message.topic, self.mailer.outcome).inc()

    # The schedule.

    async def run(self) -> None:
        """Run every task on its schedule until cancelled."""
        logger.info("worker started")
        settings = self.settings
        try:
            await self._run_tasks(settings)
        finally:
            await self.webhooks.aclose()

    async def _run_tasks(self, settings: Settings) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._drain_forever())
            group.create_task(
                self._every("reconcile", settings.reconcile_interval_seconds, self.reconcile)
            )
            group.create_task(self._every("billing", settings.billing_interval_seconds, self.bill))
            group.create_task(self._every("prune", settings.prune_interval_seconds, self.prune))

    async def _drain_forever(self) -> None:
        while True:
            try:
                claimed = await self.deliver_due()
                OUTBOX_PENDING.set(await self.database.run(outbox.pending_count))
                WEBHOOK_QUEUE_AGE.set(await self.database.run(webhook_queue_age))
                WORKER_LAST_RUN.labels("outbox").set(time.time())
            except Exception:
                logger.exception("outbox delivery pass failed")
                claimed = 0
            if claimed < self.settings.outbox_batch_size:  # a full batch: more may be due
                await asyncio.sleep(self.settings.worker_poll_seconds)

    @staticmethod
    async def _every(name: str, seconds: float, task: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await task()
                WORKER_LAST_RUN.labels(name).set(time.time())
            except Exception:
                logger.exception("worker task %s failed", name)
            await asyncio.sleep(seconds)
