"""A real SMTP server for the tests (aiosmtpd in a thread) and its inbox."""

import email
import email.policy
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller


class Inbox:
    """What the server accepted, by recipient. `refuse(address, times, code)` makes the server
    refuse that recipient the next `times` times (4xx: try later; 5xx: for good)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[tuple[str, EmailMessage]] = []
        self._refusals: dict[str, tuple[int, int]] = {}
        self.refused: list[str] = []

    def refuse(self, address: str, times: int, code: int = 451) -> None:
        with self._lock:
            self._refusals[address.lower()] = (times, code)

    def to(self, address: str) -> list[EmailMessage]:
        with self._lock:
            return [message for rcpt, message in self._received if rcpt == address.lower()]

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self._lock:
            times, code = self._refusals.get(address.lower(), (0, 0))
            if times > 0:
                self._refusals[address.lower()] = (times - 1, code)
                self.refused.append(address.lower())
                return f"{code} {code // 100}.2.0 Mailbox unavailable, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._lock:
            for rcpt in envelope.rcpt_tos:
                self._received.append((rcpt.lower(), message))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    host: str
    port: int
    inbox: Inbox


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield SmtpServer("127.0.0.1", controller.port, inbox)
    controller.stop()
