"""Throttles for sign-ups and password logins, counted in the database so that every API
process shares them, and counted before the work they guard, so that attempts sent at the
same moment count like attempts sent one by one.

Logins: after `login_failures_per_client` failures for one email from one client address
within the window, that client is refused (429) until the oldest of them ages out, even
with the right password. Across all addresses an email gets a larger budget
(`login_failures_per_email`); past it only addresses that logged in to this email
successfully in the last 30 days get through, so a stranger hammering an email slows
credential stuffing without locking the owner out. Across all emails a client address gets
`login_failures_per_address` failures in the window, so one client cannot keep the CPU busy
with password hashes for ever-new emails. Successful logins count against none of these:
they need the right password, and many users may share an address.

Each attempt is admitted and recorded in one serialised step, before the password is
checked: a transaction-level advisory lock on the client address and one on the email,
then the counts, then the attempt's row, committed (which releases the locks) before the
hash runs. A login attempt is recorded as failed until its password checks out
(`login_succeeded`), so attempts still being checked count against the budgets they could
exhaust. Sign-ups are admitted the same way, under a lock on the client address.
"""

import hashlib
import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, bindparam, func, select, update

from app.auth.models import AuthEvent, AuthEventKind
from app.config import Settings
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError
from app.metrics import LOGIN_THROTTLED

_KNOWN_ADDRESS_DAYS = 30
_SIGNUP_WINDOW = timedelta(hours=1)

# Lock scopes: what a serialised step counts under.
_LOGIN_ADDRESS = "login-address"
_LOGIN_EMAIL = "login-email"
_SIGNUP_ADDRESS = "signup-address"


class TooManyAttempts(ApiError):
    def __init__(self, retry_after: datetime) -> None:
        seconds = max(1, math.ceil((retry_after - datetime.now(UTC)).total_seconds()))
        super().__init__(
            "too_many_attempts",
            429,
            f"Too many attempts; try again in {seconds} seconds.",
            headers={"Retry-After": str(seconds)},
        )


def _lock_key(scope: str, value: str) -> int:
    """A stable 64-bit advisory lock key: the same in every process (unlike `hash()`)."""
    digest = hashlib.blake2b(f"{scope}\x00{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _serialise(unit: UnitOfWork, *keys: tuple[str, str]) -> None:
    """Hold the advisory lock of each (scope, value) until the unit commits or rolls back.

    A step that takes a lock waits for the previous holder's commit, and its later
    statements (each with a fresh snapshot under READ COMMITTED) see that holder's row.
    Locks are taken in ascending key order, so two steps sharing keys never deadlock."""
    for key in sorted(_lock_key(scope, value) for scope, value in keys):
        await unit.session.execute(
            select(func.pg_advisory_xact_lock(bindparam("key", key, type_=BigInteger)))
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


async def _record(
    unit: UnitOfWork, kind: AuthEventKind, client_ip: str, email: str | None = None
) -> int:
    """Record an attempt, and commit it: it counts whatever the request answers (a 401 or a
    409 rolls back everything else), the locks of its step are released, and no
    transaction is held across the password hash."""
    event = AuthEvent(kind=kind, client_ip=client_ip, email=email)
    unit.session.add(event)
    await unit.session.flush()
    await unit.commit()
    return event.id


async def admit_signup(unit: UnitOfWork, settings: Settings, client_ip: str) -> None:
    """Count a sign-up from client_ip, or refuse it (429) past the hourly limit."""
    await _serialise(unit, (_SIGNUP_ADDRESS, client_ip))
    nth = await _nth_newest(
        unit,
        settings.signup_limit_per_hour,
        AuthEvent.kind == AuthEventKind.SIGNUP,
        AuthEvent.client_ip == client_ip,
        AuthEvent.created_at > datetime.now(UTC) - _SIGNUP_WINDOW,
    )
    if nth is not None:
        raise TooManyAttempts(nth + _SIGNUP_WINDOW)
    await _record(unit, AuthEventKind.SIGNUP, client_ip)


async def admit_login(
    unit: UnitOfWork, settings: Settings, email: str | None, client_ip: str
) -> int:
    """Count a password attempt for email from client_ip as failed, before the password is
    checked, or refuse it (429) past a budget. Returns the attempt, for `login_succeeded`.

    email is None for one no user can have (and that cannot be stored): it counts against
    the address's budget only."""
    keys = [(_LOGIN_ADDRESS, client_ip)]
    if email is not None:
        keys.append((_LOGIN_EMAIL, email))
    await _serialise(unit, *keys)
    refused_until = await _login_refused_until(unit, settings, email, client_ip)
    if refused_until is not None:
        LOGIN_THROTTLED.inc()
        raise TooManyAttempts(refused_until)
    return await _record(unit, AuthEventKind.LOGIN_FAILED, client_ip, email)


async def login_succeeded(unit: UnitOfWork, attempt: int) -> None:
    """The attempt's password was right: it stops counting as a failure, and makes its
    address known to the email. Committed, whatever the rest of the request answers."""
    await unit.session.execute(
        update(AuthEvent)
        .where(AuthEvent.id == attempt)
        .values(kind=AuthEventKind.LOGIN_SUCCEEDED)
        .execution_options(synchronize_session=False)
    )
    await unit.commit()


async def _login_refused_until(
    unit: UnitOfWork, settings: Settings, email: str | None, client_ip: str
) -> datetime | None:
    """When every budget the attempt is past will have room again, or None if none is."""
    window = timedelta(seconds=settings.login_window_seconds)
    now = datetime.now(UTC)
    failed = AuthEvent.kind == AuthEventKind.LOGIN_FAILED
    oldest_counted = [
        await _nth_newest(
            unit,
            settings.login_failures_per_address,
            failed,
            AuthEvent.client_ip == client_ip,
            AuthEvent.created_at > now - window,
        )
    ]
    if email is not None:
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
        oldest_counted.append(
            await _nth_newest(
                unit,
                settings.login_failures_per_client,
                failed,
                AuthEvent.email == email,
                AuthEvent.client_ip == client_ip,
                AuthEvent.created_at > since,
            )
        )
        known_address = last_success is not None and last_success > now - timedelta(
            days=_KNOWN_ADDRESS_DAYS
        )
        if not known_address:
            oldest_counted.append(
                await _nth_newest(
                    unit,
                    settings.login_failures_per_email,
                    failed,
                    AuthEvent.email == email,
                    AuthEvent.created_at > now - window,
                )
            )
    past = [created_at for created_at in oldest_counted if created_at is not None]
    return max(past) + window if past else None
