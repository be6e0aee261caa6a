"""The HTTP envelope of every response: request id, security headers, body size limit,
metrics and a problem+json 500 for anything unexpected. Pure ASGI, so it costs little."""

import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from app.kit.errors import internal_error_response, problem_response
from app.kit.request_context import set_request_id
from app.metrics import REQUEST_LATENCY

logger = logging.getLogger("app.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 1024 * 1024
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class _BodyTooLarge(Exception):
    pass


class HttpEnvelopeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        # HEAD is GET without the body, wherever GET is served (as 405's Allow says).
        head = scope["method"] == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}
        headers = dict(scope["headers"])
        sent_id = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = sent_id if _CLIENT_REQUEST_ID.match(sent_id) else os.urandom(16).hex()
        set_request_id(request_id)
        started = time.perf_counter()
        response_started = False
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started, status
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                extra = [(b"x-request-id", request_id.encode()), *_SECURITY_HEADERS]
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name, value) for name, value in extra if name not in names
                ]
            elif head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            await _too_large(scope, receive, send_with_headers)
            return
        if "\x00" in scope["path"]:
            # Nothing is named with a NUL, and PostgreSQL could not even look such a name up.
            not_found = problem_response("not_found", 404, "No such resource.")
            await not_found(scope, receive, send_with_headers)
            return

        received = 0
        body_too_large = False

        async def receive_limited() -> Message:
            nonlocal received, body_too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY_BYTES:
                    body_too_large = True
                    raise _BodyTooLarge
            return message

        async def send_unless_too_large(message: Message) -> None:
            # FastAPI answers a body it could not read with its own 400; the answer is our 413.
            if not body_too_large:
                await send_with_headers(message)

        try:
            await self.app(scope, receive_limited, send_unless_too_large)
        except Exception:
            if not body_too_large:
                logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
                if not response_started:
                    await internal_error_response()(scope, receive, send_with_headers)
        finally:
            if body_too_large and not response_started:
                await _too_large(scope, receive, send_with_headers)
            _latency(scope, status).observe(time.perf_counter() - started)


# The histogram's child per method, route template and status (a bounded set: uvicorn
# parses only the standard methods), looked up once: `labels()` checks and locks every time.
_LATENCY: dict[tuple[str, str, int], Any] = {}


def _latency(scope: Scope, status: int) -> Any:
    path = getattr(scope.get("route"), "path", None) or "unmatched"
    key = (scope["method"], path, status)
    child = _LATENCY.get(key)
    if child is None:
        child = _LATENCY[key] = REQUEST_LATENCY.labels(key[0], path, str(status))
    return child


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = problem_response(
        "payload_too_large", 413, f"Request bodies are limited to {MAX_BODY_BYTES} bytes."
    )
    await response(scope, receive, send)
