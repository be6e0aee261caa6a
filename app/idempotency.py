"""Idempotency-Key, once for every authenticated POST (the IETF draft, with Stripe's semantics).

`IdempotentRoute` adds a guard dependency to each authenticated POST route. The guard runs
after authentication and reserves the key for the account in its own committed
statement, with a fingerprint of method, path and body:
- a finished key with the same fingerprint replays the stored response, with
  `Idempotent-Replayed: true`, and nothing runs again;
- the same key with another fingerprint is 422 `idempotency_key_reused`;
- a key whose first request is still running is 409 `idempotency_key_in_use`.
The route wrapper then stores the response (success or problem) before it is sent. A
request that fails validation or crashes releases its key, so a corrected retry can run.
Routes that move money (`IDEMPOTENCY_REQUIRED`) refuse to run without a key.
"""

import hashlib
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response
from fastapi.dependencies.utils import get_dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from sqlalchemy import select

from app.auth.principal import Authenticated, authenticate
from app.db import raw_connection
from app.errors import ApiError, problem_response
from app.idempotency_models import IdempotencyKey

IDEMPOTENCY_REQUIRED = {"x-idempotency-key": "required"}


def secret_fields(*names: str) -> dict[str, list[str]]:
    """Mark response fields that hold a secret shown once: the stored copy (and a replay)
    carries null there, so the secret never reaches the database."""
    return {"x-secret-fields": list(names)}


RETENTION = timedelta(hours=24)
# A reservation older than this belongs to a request whose process died; a retry may take
# it over. Money-moving services also record the key on what they create, so a retry that
# takes over finds that and does not move money twice.
IN_FLIGHT_LEASE = timedelta(seconds=60)
_KEY_ALPHABET = frozenset(chr(code) for code in range(0x20, 0x7F))


@dataclass
class Reservation:
    account_id: str
    key: str


def _key_required() -> ApiError:
    return ApiError(
        "idempotency_key_required", 400, "Send an Idempotency-Key header with this request."
    )


def _in_use() -> ApiError:
    return ApiError(
        "idempotency_key_in_use",
        409,
        "A request with this Idempotency-Key is still running; retry shortly.",
        headers={"Retry-After": "1"},
    )


class _Replay(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _fingerprint(method: str, path: str, body: bytes) -> str:
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + canonical).hexdigest()


async def idempotency_guard(
    request: Request,
    principal: Authenticated,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="1-255 printable characters; a retry with the same key is answered "
            "with the first response and moves no money again.",
        ),
    ] = None,
) -> None:
    extra = getattr(request.scope.get("route"), "openapi_extra", None) or {}
    required = extra.get("x-idempotency-key") == "required"
    if idempotency_key is None:
        if required:
            raise _key_required()
        return
    if not idempotency_key or not set(idempotency_key) <= _KEY_ALPHABET:
        raise ApiError(
            "validation_error",
            422,
            "The Idempotency-Key header must be 1 to 255 printable characters.",
            extra={"errors": [{"field": "header.Idempotency-Key", "message": "is not valid"}]},
        )
    fingerprint = _fingerprint(request.method, request.url.path, await request.body())
    account_id = principal.account_id
    for _ in range(3):  # the key may vanish between the two steps (released, pruned)
        async with raw_connection(request.app.state.engine) as conn:
            # The usual case, a new key, is this one statement, committed on its own.
            inserted = await conn.fetchval(_RESERVE, account_id, idempotency_key, fingerprint)
        if inserted is not None or await _check_existing(
            request, account_id, idempotency_key, fingerprint
        ):
            break
    else:
        raise _in_use()
    request.state.idempotency = Reservation(account_id, idempotency_key)


_RESERVE = """
    INSERT INTO idempotency_key (account_id, key, fingerprint) VALUES ($1, $2, $3)
    ON CONFLICT DO NOTHING RETURNING key
"""


async def _check_existing(
    request: Request, account_id: str, idempotency_key: str, fingerprint: str
) -> bool:
    """The key exists: replay its answer, refuse, or take over an abandoned reservation
    (True). False when the key is gone again by now."""
    now = datetime.now(UTC)
    async with request.app.state.session_factory() as session, session.begin():
        existing = await session.scalar(
            select(IdempotencyKey)
            .where(
                IdempotencyKey.account_id == account_id,
                IdempotencyKey.key == idempotency_key,
            )
            .with_for_update()
        )
        if existing is None:  # released or pruned since: reserve it afresh
            return False
        if existing.created_at < now - RETENTION:
            existing.fingerprint = fingerprint
            existing.response_status = existing.response_body = None
            existing.created_at = existing.locked_at = now
        elif existing.fingerprint != fingerprint:
            raise ApiError(
                "idempotency_key_reused",
                422,
                "This Idempotency-Key was used with a different request.",
            )
        elif existing.response_status is not None:
            raise _Replay(_replayed(existing))
        elif existing.locked_at > now - IN_FLIGHT_LEASE:
            raise _in_use()
        else:
            existing.locked_at = now
    return True


def _replayed(row: IdempotencyKey) -> Response:
    assert row.response_status is not None
    return Response(
        content=row.response_body,
        status_code=row.response_status,
        media_type=row.response_content_type,
        headers={"Idempotent-Replayed": "true"},
    )


def _storable_body(request: Request, response: Response) -> bytes:
    extra = getattr(request.scope.get("route"), "openapi_extra", None) or {}
    secrets = extra.get("x-secret-fields") or []
    body = bytes(response.body)
    if not secrets or response.status_code >= 400:
        return body
    document = json.loads(body)
    for name in secrets:
        if name in document:
            document[name] = None
    return json.dumps(document, separators=(",", ":")).encode()


async def _store(request: Request, reservation: Reservation, response: Response) -> None:
    async with raw_connection(request.app.state.engine) as conn:
        await conn.execute(
            "UPDATE idempotency_key SET response_status = $3, response_body = $4,"
            " response_content_type = $5 WHERE account_id = $1 AND key = $2",
            reservation.account_id,
            reservation.key,
            response.status_code,
            _storable_body(request, response),
            response.headers.get("content-type"),
        )


async def _release(request: Request, reservation: Reservation) -> None:
    async with raw_connection(request.app.state.engine) as conn:
        await conn.execute(
            "DELETE FROM idempotency_key WHERE account_id = $1 AND key = $2",
            reservation.account_id,
            reservation.key,
        )


def _needs_authentication(endpoint: Callable[..., Any], path: str) -> bool:
    def uses_auth(dependant: Any) -> bool:
        return any(dep.call is authenticate or uses_auth(dep) for dep in dependant.dependencies)

    return uses_auth(get_dependant(path=path, call=endpoint))


class IdempotentRoute(APIRoute):
    """A route whose authenticated POSTs honour Idempotency-Key."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = {method.upper() for method in kwargs.get("methods") or ()}
        if "POST" in methods and _needs_authentication(endpoint, path):
            kwargs["dependencies"] = [
                Depends(idempotency_guard),
                *(kwargs.get("dependencies") or []),
            ]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except _Replay as replay:
                return replay.response
            except ApiError as error:
                reservation = getattr(request.state, "idempotency", None)
                if reservation is None:
                    raise
                response = problem_response(
                    error.code, error.status, error.detail, headers=error.headers, extra=error.extra
                )
                if error.status >= 500:
                    await _release(request, reservation)
                else:
                    await _store(request, reservation, response)
                return response
            except (RequestValidationError, Exception):
                reservation = getattr(request.state, "idempotency", None)
                if reservation is not None:
                    await _release(request, reservation)
                raise
            reservation = getattr(request.state, "idempotency", None)
            if reservation is not None:
                if response.status_code >= 500:
                    await _release(request, reservation)
                else:
                    await _store(request, reservation, response)
            return response

        return handle


async def reserved_key(
    request: Request, _guard: Annotated[None, Depends(idempotency_guard)]
) -> str:
    """The key the guard reserved for this request (on routes that require one)."""
    reservation: Reservation | None = getattr(request.state, "idempotency", None)
    if reservation is None:
        raise _key_required()
    return reservation.key


IdempotencyKeyDep = Annotated[str, Depends(reserved_key)]
