"""Idempotency-Key, the one mechanism for every authenticated POST (the IETF draft, with
Stripe's semantics): the table, and the reservation, replay and answer of a key.

A key is reserved for an account inside the request's own unit of work, so the key, what
the request changed and the answer it gave commit together (a request that fails leaves no
reservation behind). A second request with the key waits for the first's transaction, then:
- the same fingerprint and a stored answer: that answer again, `Idempotent-Replayed: true`;
- another fingerprint: 422 `idempotency_key_reused`;
- no answer yet (the first committed part of its work, a card charge in flight): 409
  `idempotency_key_in_use`, until its lease runs out and a retry may take it over. Money
  moving services also record the key on what they create, so a retry that takes over
  finds that and does not move money twice.
The fingerprint is an HMAC of method, path and canonical body under the service's secret:
a dump of the table does not let anyone test guesses at a password sent in a body.
"""

import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from fastapi import Response
from sqlalchemy import DateTime, ForeignKey, Index, Integer, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, UnitOfWork, created_at_column
from app.kit.errors import ApiError

RETENTION = timedelta(hours=24)
# A reservation with no answer older than this belongs to a request whose process died.
IN_FLIGHT_LEASE = timedelta(seconds=60)
_KEY_ALPHABET = frozenset(chr(code) for code in range(0x20, 0x7F))


class IdempotencyKey(Base):
    __tablename__ = "idempotency_key"
    __table_args__ = (Index("ix_idempotency_key_created_at", "created_at"),)

    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    # NULL while the first request runs; set, with the body, once it has answered.
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    response_content_type: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = created_at_column()
    locked_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.clock_timestamp()
    )


class HasAccount(Protocol):
    @property
    def account_id(self) -> str: ...


@dataclass
class Claim:
    """A request's claim on a key: whose (the caller, whose account may be known only once
    the request's first statement has checked it), what it is, whether this unit holds it,
    whether its answer is stored already (the balance order stores it in the statement that
    pays)."""

    caller: HasAccount
    key: str
    fingerprint: str
    held: bool = False
    answered: bool = False

    @property
    def account_id(self) -> str:
        return self.caller.account_id


class Replay(Exception):
    """The key's first answer, to send again instead of running the request."""

    def __init__(self, response: Response) -> None:
        self.response = response


def key_required() -> ApiError:
    return ApiError(
        "idempotency_key_required", 400, "Send an Idempotency-Key header with this request."
    )


def in_use() -> ApiError:
    return ApiError(
        "idempotency_key_in_use",
        409,
        "A request with this Idempotency-Key is still running; retry shortly.",
        headers={"Retry-After": "1"},
    )


def check_key(key: str) -> None:
    if not key or len(key) > 255 or not set(key) <= _KEY_ALPHABET:
        raise ApiError(
            "validation_error",
            422,
            "The Idempotency-Key header must be 1 to 255 printable characters.",
            extra={"errors": [{"field": "header.Idempotency-Key", "message": "is not valid"}]},
        )


# json.dumps with options builds a new encoder on each call.
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def fingerprint(secret: str, method: str, path: str, body: bytes) -> str:
    try:
        canonical = _CANONICAL_JSON.encode(json.loads(body)).encode()
    except ValueError:
        canonical = body
    message = method.encode() + b" " + path.encode() + b"\n" + canonical
    return hmac.digest(secret.encode(), message, "sha256").hex()


_RESERVE = """
    INSERT INTO idempotency_key (account_id, key, fingerprint) VALUES ($1, $2, $3)
    ON CONFLICT DO NOTHING RETURNING key
"""

_EXISTING = """
    SELECT fingerprint, response_status, response_body, response_content_type, created_at,
           locked_at
    FROM idempotency_key WHERE account_id = $1 AND key = $2
    FOR UPDATE
"""


async def reserve(unit: UnitOfWork, claim: Claim) -> None:
    """Hold the key in the unit's transaction, or raise: Replay, reused, in use."""
    conn = await unit.connection()
    for _ in range(3):  # the key may vanish between the two statements (pruned)
        if await conn.fetchval(_RESERVE, claim.account_id, claim.key, claim.fingerprint):
            claim.held = True
            return
        row = await conn.fetchrow(_EXISTING, claim.account_id, claim.key)
        if row is None:
            continue
        now = datetime.now(UTC)
        expired = row["created_at"] < now - RETENTION
        if not expired and row["fingerprint"] != claim.fingerprint:
            raise ApiError(
                "idempotency_key_reused",
                422,
                "This Idempotency-Key was used with a different request.",
            )
        if not expired and row["response_status"] is not None:
            raise Replay(
                Response(
                    content=row["response_body"],
                    status_code=row["response_status"],
                    media_type=row["response_content_type"],
                    headers={"Idempotent-Replayed": "true"},
                )
            )
        if not expired and row["locked_at"] > now - IN_FLIGHT_LEASE:
            raise in_use()
        # Expired, or abandoned by a process that died: this request takes it over.
        await conn.execute(
            "UPDATE idempotency_key SET fingerprint = $3, response_status = NULL,"
            " response_body = NULL, response_content_type = NULL, locked_at = $4,"
            " created_at = CASE WHEN created_at < $5 THEN $4 ELSE created_at END"
            " WHERE account_id = $1 AND key = $2",
            claim.account_id,
            claim.key,
            claim.fingerprint,
            now,
            now - RETENTION,
        )
        claim.held = True
        return
    raise in_use()


def storable_body(response: Response, secret_fields: list[str]) -> bytes:
    """The body to keep: a secret shown once (an API key's `key`) is kept as null."""
    body = bytes(response.body)
    if not secret_fields or response.status_code >= 400:
        return body
    document = json.loads(body)
    for name in secret_fields:
        if name in document:
            document[name] = None
    return json.dumps(document, separators=(",", ":")).encode()


async def store_answer(
    unit: UnitOfWork, claim: Claim, response: Response, secret_fields: list[str]
) -> None:
    """Keep the answer with the key this request holds (in the unit's transaction, or
    committed by an earlier part of it)."""
    conn = await unit.connection()
    await conn.execute(
        "UPDATE idempotency_key SET response_status = $3, response_body = $4,"
        " response_content_type = $5"
        " WHERE account_id = $1 AND key = $2 AND response_status IS NULL",
        claim.account_id,
        claim.key,
        response.status_code,
        storable_body(response, secret_fields),
        response.headers.get("content-type"),
    )
    claim.answered = True


async def store_lost_answer(unit: UnitOfWork, claim: Claim, response: Response) -> None:
    """Keep a failure's answer whose reservation was rolled back with the request: the key
    with its answer, unless another request has taken the key meanwhile (its answer wins)."""
    conn = await unit.connection()
    await conn.execute(
        "INSERT INTO idempotency_key (account_id, key, fingerprint, response_status,"
        " response_body, response_content_type) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT DO NOTHING",
        claim.account_id,
        claim.key,
        claim.fingerprint,
        response.status_code,
        bytes(response.body),
        response.headers.get("content-type"),
    )
    claim.answered = True


async def release(unit: UnitOfWork, claim: Claim) -> None:
    """Free a key whose reservation committed but whose request then failed on our side,
    so that a retry runs (and finds what the first attempt made)."""
    conn = await unit.connection()
    await conn.execute(
        "DELETE FROM idempotency_key WHERE account_id = $1 AND key = $2"
        " AND response_status IS NULL",
        claim.account_id,
        claim.key,
    )
