"""Rules of authentication: password logins that issue access tokens, and API keys."""

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update

from app.auth import throttle
from app.auth.models import ApiKey
from app.auth.principal import Principal
from app.auth.schemas import ApiKeyCreateIn, TokenOut
from app.auth.security import (
    AccessClaims,
    api_key_digest,
    api_key_display_prefix,
    issue_access_token,
    new_api_key_secret,
    verify_password,
)
from app.config import Settings
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError, NotFound
from app.kit.ids import new_id
from app.kit.pagination import PageRequest, paginate
from app.kit.schemas import is_storable_text
from app.metrics import LOGIN_FAILURES

MAX_EMAIL_LENGTH = 320


def _invalid_credentials() -> ApiError:
    return ApiError("invalid_credentials", 401, "The email or the password is not correct.")


@dataclass(frozen=True)
class _Credentials:
    """What a login needs of a live user (the accounts package owns the table)."""

    user_id: str
    account_id: str
    password_hash: str
    token_version: int


_CREDENTIALS_BY_EMAIL = """
    SELECT id, account_id, password_hash, token_version
    FROM app_user WHERE email = $1 AND deleted_at IS NULL
"""


async def _credentials(unit: UnitOfWork, email: str) -> _Credentials | None:
    conn = await unit.connection()
    row = await conn.fetchrow(_CREDENTIALS_BY_EMAIL, email)
    if row is None:
        return None
    return _Credentials(
        user_id=row["id"],
        account_id=row["account_id"],
        password_hash=row["password_hash"],
        token_version=row["token_version"],
    )


async def issue_token(
    unit: UnitOfWork, settings: Settings, email: str, password: str, client_ip: str
) -> TokenOut:
    email = email.strip().lower()
    # No user has an impossible email and it cannot be stored: it counts against the
    # address's budget only, and is answered like any unknown one.
    possible = len(email) <= MAX_EMAIL_LENGTH and is_storable_text(email)
    user = await _credentials(unit, email) if possible else None
    # Counted (and committed) before the hash, so parallel guesses count like sequential ones.
    attempt = await throttle.admit_login(unit, settings, email if possible else None, client_ip)
    # Checked against a dummy hash when the email is unknown: same answer, about the same time.
    valid = await verify_password(password, user.password_hash if user else None)
    if not valid or user is None:
        LOGIN_FAILURES.inc()
        raise _invalid_credentials()
    await throttle.login_succeeded(unit, attempt)
    claims = AccessClaims(
        user_id=user.user_id, account_id=user.account_id, token_version=user.token_version
    )
    ttl = settings.access_token_ttl_seconds
    return TokenOut(
        access_token=issue_access_token(claims, settings.secret_key, ttl), expires_in=ttl
    )


async def create_api_key(
    unit: UnitOfWork, principal: Principal, body: ApiKeyCreateIn
) -> tuple[ApiKey, str]:
    secret = new_api_key_secret()
    api_key = ApiKey(
        id=new_id("key"),
        account_id=principal.account_id,
        name=body.name,
        role=body.role,
        integration=body.integration,
        prefix=api_key_display_prefix(secret),
        digest=api_key_digest(secret),
    )
    unit.session.add(api_key)
    await unit.session.flush()
    await unit.session.refresh(api_key)
    return api_key, secret


async def list_api_keys(
    unit: UnitOfWork, principal: Principal, page: PageRequest
) -> tuple[list[ApiKey], bool]:
    query = select(ApiKey).where(
        ApiKey.account_id == principal.account_id, ApiKey.revoked_at.is_(None)
    )
    return await paginate(unit, query, ApiKey, page)


async def revoke_api_key(unit: UnitOfWork, principal: Principal, key_id: str) -> None:
    revoked = await unit.session.scalar(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            ApiKey.account_id == principal.account_id,
            ApiKey.revoked_at.is_(None),
        )
        .values(revoked_at=datetime.now(UTC))
        .returning(ApiKey.id)
    )
    if revoked is None:
        raise NotFound("API key")
