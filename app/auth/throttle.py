"""Throttles for sign-ups and password logins, counted in the database so that every API
process shares them.

Logins: after `login_failures_per_client` failures for one email from one client address
within the window, that client is refused (429) until the oldest of them ages out, even
with the right password. Across all addresses an email gets a larger budget
(`login_failures_per_email`); past it only addresses that logged in to this email
successfully in the last 30 days get through, so a stranger hammering an email slows
credential stuffing without locking the owner out.
"""

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, func, select

from app.auth.models import AuthEvent, AuthEventKind
from app.config import Settings
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError
from app.metrics import LOGIN_THROTTLED

_KNOWN_ADDRESS_DAYS = 30


class TooManyAttempts(ApiError):
    def __init__(self, retry_after: datetime) -> None:
        seconds = max(1, math.ceil((retry_after - datetime.now(UTC)).total_seconds()))
        super().__init__(
            "too_many_attempts",
            429,
            f"Too many attempts; try again in {seconds} seconds.",
            headers={"Retry-After": str(seconds)},
        )


async def _nth_newest(unit: UnitOfWork, n: int, *conditions: object) -> datetime | None:
    """The created_at of the n-th newest event matching conditions, or None if fewer exist."""
    return await unit.session.scalar(
        select(AuthEvent.created_at)
        .where(*conditions)  # type: ignore[arg-type]
        .order_by(AuthEvent.created_at.desc())
        .offset(n - 1)
        .limit(1)
    )


async def check_signup_allowed(unit: UnitOfWork, settings: Settings, client_ip: str) -> None:
    window = timedelta(hours=1)
    since = datetime.now(UTC) - window
    nth = await _nth_newest(
        unit,
        settings.signup_limit_per_hour,
        AuthEvent.kind == AuthEventKind.SIGNUP,
        AuthEvent.client_ip == client_ip,
        AuthEvent.created_at > since,
    )
    if nth is not None:
        raise TooManyAttempts(nth + window)


async def check_login_allowed(
    unit: UnitOfWork, settings: Settings, email: str, client_ip: str
) -> None:
    window = timedelta(seconds=settings.login_window_seconds)
    now = datetime.now(UTC)
    last_success = await unit.session.scalar(
        select(func.max(AuthEvent.created_at)).where(
            AuthEvent.kind == AuthEventKind.LOGIN_SUCCEEDED,
            AuthEvent.email == email,
            AuthEvent.client_ip == client_ip,
        )
    )
    since = now - window
    if last_success is not None and last_success > since:
        since = last_success
    nth = await _nth_newest(
        unit,
        settings.login_failures_per_client,
        AuthEvent.kind == AuthEventKind.LOGIN_FAILED,
        AuthEvent.email == email,
        AuthEvent.client_ip == client_ip,
        AuthEvent.created_at > since,
    )
    if nth is not None:
        LOGIN_THROTTLED.inc()
        raise TooManyAttempts(nth + window)

    known_address = last_success is not None and last_success > now - timedelta(
        days=_KNOWN_ADDRESS_DAYS
    )
    if known_address:
        return
    nth = await _nth_newest(
        unit,
        settings.login_failures_per_email,
        and_(AuthEvent.kind == AuthEventKind.LOGIN_FAILED, AuthEvent.email == email),
        AuthEvent.created_at > now - window,
    )
    if nth is not None:
        LOGIN_THROTTLED.inc()
        raise TooManyAttempts(nth + window)


async def record(
    unit: UnitOfWork, kind: AuthEventKind, client_ip: str, email: str | None = None
) -> None:
    """Count an attempt, and commit it: it counts whatever the request answers (a 401 or a
    409 rolls back everything else), and no transaction is held across the password hash."""
    unit.session.add(AuthEvent(kind=kind, client_ip=client_ip, email=email))
    await unit.commit()
