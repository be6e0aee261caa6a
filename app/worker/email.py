"""Email delivery for the outbox's `email` topic: over SMTP with aiosmtplib when SMTP_HOST is
set, otherwise to the log (the message is then kept as `logged`)."""

import logging
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, Protocol

import aiosmtplib

from app.config import Settings
from app.finance.notifications import auto_top_up_suspended_email, low_balance_email
from app.kit.outbox import OutboxStatus

logger = logging.getLogger(__name__)

EMAIL_TOPIC = "email"


class PermanentFailure(Exception):
    """The receiving side refused for good (an SMTP 5xx): retrying cannot help."""


class Mailer(Protocol):
    # The outbox status of a message this mailer sent: delivered, or logged.
    outcome: OutboxStatus

    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    outcome = OutboxStatus.DELIVERED

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host is not None
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._timeout = settings.smtp_timeout_seconds

    async def send(self, message: EmailMessage) -> None:
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                timeout=self._timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as refused:
            if all(500 <= r.code < 600 for r in refused.recipients):
                raise PermanentFailure(str(refused)) from refused
            raise
        except aiosmtplib.SMTPResponseException as error:
            if 500 <= error.code < 600:
                raise PermanentFailure(f"{error.code} {error.message}") from error
            raise


class LogMailer:
    """No SMTP server configured: the email goes to the log instead."""

    outcome = OutboxStatus.LOGGED

    async def send(self, message: EmailMessage) -> None:
        logger.info(
            "email (no SMTP_HOST set) to %s: %s\n%s",
            message["To"],
            message["Subject"],
            message.get_content().strip(),
        )


def create_mailer(settings: Settings) -> Mailer:
    return SmtpMailer(settings) if settings.smtp_host else LogMailer()


# Notices queued as data (by the database, in the transaction that caused them) are written
# out when they are sent; any other message carries its subject and body.
_WRITERS = {
    "low_balance": low_balance_email,
    "auto_top_up_suspended": auto_top_up_suspended_email,
}


def build_message(settings: Settings, message_id: int, payload: dict[str, Any]) -> EmailMessage:
    """The email of one outbox message. Its Message-ID is derived from the outbox id, so a
    repeat after a crash carries the same id and a receiver can drop it."""
    writer = _WRITERS.get(payload.get("kind", ""))
    subject, body = (
        writer(payload)
        if writer and "subject" not in payload
        else (payload["subject"], payload["body"])
    )
    email = EmailMessage()
    email["From"] = settings.smtp_from
    email["To"] = payload["to"]
    email["Subject"] = subject
    email["Date"] = formatdate(localtime=False)
    domain = settings.smtp_from.rpartition("@")[2] or "billing.local"
    email["Message-ID"] = f"<outbox-{message_id}@{domain}>"
    email.set_content(body)
    return email
