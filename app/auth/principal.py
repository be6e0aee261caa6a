"""Who is calling: a user with a bearer token or an integration with an API key.

Access rules are enforced here, once, and read from route signatures through the
aliases at the bottom (`RequireAdmin`, `RequireFinance`, `RequireMember`).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer
from sqlalchemy import select, update

from app.accounts.models import Account, User
from app.auth.models import ApiKey
from app.auth.security import api_key_digest, read_access_token
from app.deps import Session, SettingsDep
from app.errors import ApiError, Forbidden

_bearer = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False)
# Writing last_used_at on every call would put a write on every read; once a minute is enough.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    account: Account
    role: str
    user: User | None = None
    api_key: ApiKey | None = None

    @property
    def account_id(self) -> str:
        return self.account.id

    @property
    def integration(self) -> str | None:
        return self.api_key.integration if self.api_key else None


class Unauthenticated(ApiError):
    def __init__(self) -> None:
        super().__init__(
            "unauthenticated",
            401,
            "Send a valid bearer token or API key.",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def authenticate(
    session: Session,
    settings: SettingsDep,
    token: Annotated[str | None, Depends(_bearer)],
    key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    if token:
        return await _from_token(session, token, settings.secret_key)
    if key:
        return await _from_api_key(session, key)
    raise Unauthenticated


async def _from_token(session: Session, token: str, secret: str) -> Principal:
    claims = read_access_token(token, secret)
    if claims is None:
        raise Unauthenticated
    async with session.begin():
        row = (
            await session.execute(
                select(User, Account)
                .join(Account, Account.id == User.account_id)
                .where(User.id == claims.user_id, User.deleted_at.is_(None))
            )
        ).one_or_none()
    if row is None:
        raise Unauthenticated
    user, account = row
    if user.token_version != claims.token_version or account.id != claims.account_id:
        raise Unauthenticated
    return Principal(account=account, role=user.role, user=user)


async def _from_api_key(session: Session, key: str) -> Principal:
    if len(key) > 200:
        raise Unauthenticated
    async with session.begin():
        row = (
            await session.execute(
                select(ApiKey, Account)
                .join(Account, Account.id == ApiKey.account_id)
                .where(ApiKey.digest == api_key_digest(key), ApiKey.revoked_at.is_(None))
            )
        ).one_or_none()
        if row is None:
            raise Unauthenticated
        api_key, account = row
        now = datetime.now(UTC)
        if api_key.last_used_at is None or now - api_key.last_used_at > _LAST_USED_RESOLUTION:
            await session.execute(
                update(ApiKey).where(ApiKey.id == api_key.id).values(last_used_at=now)
            )
            api_key.last_used_at = now
    return Principal(account=account, role=api_key.role, api_key=api_key)


def require_role(*roles: str) -> object:
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role not in roles:
            raise Forbidden
        return principal

    return Depends(check)


async def require_user(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if principal.user is None:
        raise Forbidden("Only a signed-in user may do this, not an API key.")
    return principal


Authenticated = Annotated[Principal, Depends(authenticate)]
RequireMember = Annotated[Principal, require_role("admin", "finance", "user")]
RequireFinance = Annotated[Principal, require_role("admin", "finance")]
RequireAdmin = Annotated[Principal, require_role("admin")]
RequireSignedInUser = Annotated[Principal, Depends(require_user)]
