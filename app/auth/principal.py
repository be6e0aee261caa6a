"""Who is calling: a user with a bearer token or an integration with an API key.

Access rules are enforced here, once, and read from route signatures through the
aliases at the bottom (`RequireAdmin`, `RequireFinance`, `RequireMember`).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

import asyncpg
from fastapi import Request
from fastapi.security import APIKeyHeader, OAuth2PasswordBearer

from app.auth.models import Integration, Role
from app.auth.security import AccessClaims, api_key_digest, read_access_token
from app.config import Settings
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError, Forbidden
from app.kit.routing import Provided, authenticates

# The two ways to authenticate, as the OpenAPI document declares them.
BEARER = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False)
# Writing last_used_at on every call would put a write on every read; once a minute is enough.
_LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class CallerAccount:
    """The caller's account, as authentication read it (the accounts package owns the table)."""

    id: str
    name: str
    company_name: str | None
    email: str
    phone: str | None
    created_at: datetime


@dataclass(frozen=True)
class CallerUser:
    """The signed-in user who is calling (never their password hash)."""

    id: str
    account_id: str
    email: str
    name: str
    role: Role
    token_version: int
    created_at: datetime


@dataclass(frozen=True)
class CallerKey:
    """The API key that is calling (never its digest)."""

    id: str
    account_id: str
    name: str
    role: Role
    integration: Integration | None
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True)
class CallerRead:
    """What a route reads of the caller's account in the caller's own statement, so that the
    route needs no round trip of its own (the balance). `columns`: each name with its SQL
    expression, `{account}` where the account's id goes; the values land in
    `Principal.read` under those names."""

    columns: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Principal:
    account: CallerAccount
    role: Role
    user: CallerUser | None = None
    api_key: CallerKey | None = None
    read: Mapping[str, object] = field(default_factory=dict)  # what a CallerRead asked for

    @property
    def account_id(self) -> str:
        return self.account.id

    @property
    def integration(self) -> Integration | None:
        return self.api_key.integration if self.api_key else None


class Unauthenticated(ApiError):
    def __init__(self) -> None:
        super().__init__(
            "unauthenticated",
            401,
            "Send a valid bearer token or API key.",
            headers={"WWW-Authenticate": "Bearer"},
        )


@authenticates(BEARER, API_KEY)
async def authenticate(request: Request) -> Principal:
    return await _authenticate(request, None)


async def _authenticate(request: Request, read: CallerRead | None) -> Principal:
    """The caller, read by one statement of its own before the request's transaction: every
    request runs it, so it skips the ORM and a BEGIN, and a revoked key or a changed password
    is refused at once. It reads both headers itself rather than through two more
    dependencies (FastAPI costs more per dependency than the read); `ApiRoute` declares the
    two schemes (`BEARER`, `API_KEY`) in the OpenAPI document."""
    known: Principal | None = getattr(request.state, "principal", None)  # the role check's
    if known is not None:
        return known
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    principal = await _identify(
        request.state.unit,
        request.app.state.settings,
        token.strip() if scheme.lower() == "bearer" else None,
        request.headers.get("x-api-key"),
        read,
    )
    request.state.principal = principal
    return principal


async def _identify(
    unit: UnitOfWork,
    settings: Settings,
    token: str | None,
    key: str | None,
    read: CallerRead | None,
) -> Principal:
    if token:
        claims = read_access_token(token, settings.secret_key)
        if claims is None:
            raise Unauthenticated
        return await _from_token(unit, claims, read)
    if key:
        if len(key) > 200:
            raise Unauthenticated
        return await _from_api_key(unit, key, read)
    raise Unauthenticated


# The caller and its account in one round trip, read by named columns.
_ACCOUNT_COLUMNS = """a.name AS a_name, a.company_name AS a_company_name, a.email AS a_email,
    a.phone AS a_phone, a.created_at AS a_created_at"""

_USER_BY_ID = f"""
    SELECT u.id, u.account_id, u.email, u.name, u.role, u.token_version, u.created_at,
           {_ACCOUNT_COLUMNS}{{read}}
    FROM app_user u JOIN account a ON a.id = u.account_id
    WHERE u.id = $1 AND u.deleted_at IS NULL
"""  # noqa: S608  (constant text, no input in it)

# The calling key and its account, by the database function of migration 0013, which
# also writes last_used_at, at most once a minute (a write on every read would cost more
# than the read). Its columns: the key's, used_at, and the account's as _ACCOUNT_COLUMNS.
_API_KEY_BY_DIGEST = """
    SELECT k.*{read}
    FROM caller_by_api_key($1, $2::interval) k
"""


def _statement(template: str, account: str, read: CallerRead | None) -> str:
    """The caller's statement, with the columns a route asked to read along (once each)."""
    key = (template, read)
    statement = _STATEMENTS.get(key)
    if statement is None:
        columns = "".join(
            f",\n    {expression.format(account=account)} AS {name}"
            for name, expression in (read.columns if read else ())
        )
        statement = _STATEMENTS[key] = template.format(read=columns)
    return statement


_STATEMENTS: dict[tuple[str, CallerRead | None], str] = {}


def _read(row: asyncpg.Record, read: CallerRead | None) -> Mapping[str, object]:
    return {name: row[name] for name, _ in read.columns} if read else {}


def _account(row: asyncpg.Record) -> CallerAccount:
    return CallerAccount(
        id=row["account_id"],
        name=row["a_name"],
        company_name=row["a_company_name"],
        email=row["a_email"],
        phone=row["a_phone"],
        created_at=row["a_created_at"],
    )


async def _from_token(unit: UnitOfWork, claims: AccessClaims, read: CallerRead | None) -> Principal:
    row = await unit.fetchrow_atomic(_statement(_USER_BY_ID, "u.account_id", read), claims.user_id)
    if (
        row is None
        or row["token_version"] != claims.token_version
        or row["account_id"] != claims.account_id
    ):
        raise Unauthenticated
    user = CallerUser(
        id=row["id"],
        account_id=row["account_id"],
        email=row["email"],
        name=row["name"],
        role=Role(row["role"]),
        token_version=row["token_version"],
        created_at=row["created_at"],
    )
    return Principal(account=_account(row), role=user.role, user=user, read=_read(row, read))


async def _from_api_key(unit: UnitOfWork, key: str, read: CallerRead | None) -> Principal:
    row = await unit.fetchrow_atomic(
        _statement(_API_KEY_BY_DIGEST, "k.account_id", read),
        api_key_digest(key),
        _LAST_USED_RESOLUTION,
    )
    if row is None:
        raise Unauthenticated
    api_key = CallerKey(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        role=Role(row["role"]),
        integration=Integration(row["integration"]) if row["integration"] is not None else None,
        prefix=row["prefix"],
        created_at=row["created_at"],
        last_used_at=row["used_at"],
    )
    return Principal(
        account=_account(row), role=api_key.role, api_key=api_key, read=_read(row, read)
    )


def require_role(
    *roles: Role,
    refuse: Callable[[Principal], ApiError | None] | None = None,
    read: CallerRead | None = None,
) -> Provided:
    """The caller, if their role is one of `roles` and `refuse` finds nothing to object to;
    else 403. Checked before anything else of the request (its Idempotency-Key included).
    `read`: what of the account to read along with the caller (nothing is revealed before
    the role check: the route answers only after it)."""

    @authenticates(BEARER, API_KEY)
    async def check(request: Request) -> Principal:
        principal = await _authenticate(request, read)
        if principal.role not in roles:
            raise Forbidden
        refusal = refuse(principal) if refuse else None
        if refusal is not None:
            raise refusal
        return principal

    return Provided(check)


def _integration_minting(principal: Principal) -> ApiError | None:
    # A credential never mints a less restricted one.
    if principal.integration is None:
        return None
    return Forbidden("An integration's API key cannot manage API keys or users.")


def _key_vault_card(principal: Principal) -> ApiError | None:
    if principal.integration != Integration.AZURE_KEY_VAULT:
        return None
    return Forbidden("An Azure Key Vault integration cannot change the card on file.")


def _key_vault_charge(principal: Principal) -> ApiError | None:
    if principal.integration != Integration.AZURE_KEY_VAULT:
        return None
    return ApiError(
        "payment_method_not_allowed",
        403,
        "Azure Key Vault integrations may only pay from the balance; a deposit charges the card.",
    )


@authenticates(BEARER, API_KEY)
async def require_user(request: Request) -> Principal:
    principal = await authenticate(request)
    if principal.user is None:
        raise Forbidden("Only a signed-in user may do this, not an API key.")
    return principal


Authenticated = Annotated[Principal, Provided(authenticate)]
MEMBER_ROLES = (Role.ADMIN, Role.FINANCE, Role.USER)
RequireMember = Annotated[Principal, require_role(*MEMBER_ROLES)]
RequireFinance = Annotated[Principal, require_role(Role.ADMIN, Role.FINANCE)]
RequireAdmin = Annotated[Principal, require_role(Role.ADMIN)]
RequireSignedInUser = Annotated[Principal, Provided(require_user)]
# Who may manage the account's API keys and users: an admin, not through an integration key.
RequireAccessAdmin = Annotated[Principal, require_role(Role.ADMIN, refuse=_integration_minting)]
# Who may change the card on file, and who may charge it for a deposit: never an Azure Key
# Vault key, which pays from the balance only.
RequireCardHolder = Annotated[
    Principal, require_role(Role.ADMIN, Role.FINANCE, refuse=_key_vault_card)
]
RequireDepositor = Annotated[
    Principal, require_role(Role.ADMIN, Role.FINANCE, refuse=_key_vault_charge)
]
