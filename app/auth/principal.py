"""Who is calling: a user with a bearer token or an integration with an API key.

Access rules are enforced here, once, and read from route signatures through the
aliases at the bottom (`RequireAdmin`, `RequireFinance`, `RequireMember`). Those check the
caller with a statement of its own before the route runs. The two hot routes (a balance
order, the balance) take a `MemberCaller` instead: the caller is checked by the route's
first statement, which carries the caller's (`Caller.along`), so the whole request is one
round trip; a request refused before that statement has its caller checked first.
"""

from collections.abc import Callable
from dataclasses import dataclass
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
from app.kit.routing import Provided, authenticates, owe_caller_check

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
class Principal:
    account: CallerAccount
    role: Role
    user: CallerUser | None = None
    api_key: CallerKey | None = None

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


@dataclass(frozen=True)
class _Credential:
    """What the request's headers say of its caller, before the database is asked: a bearer
    token's verified claims, or an API key."""

    claims: AccessClaims | None = None
    key: str | None = None


def _credential(request: Request) -> _Credential:
    """The credential of the request, or 401 for what needs no database to refuse (none, a
    token that does not verify, a key longer than any we issue). Both headers are read here
    rather than through two more dependencies; `ApiRoute` declares the two schemes
    (`BEARER`, `API_KEY`) in the OpenAPI document."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        settings: Settings = request.app.state.settings
        claims = read_access_token(token.strip(), settings.secret_key)
        if claims is None:
            raise Unauthenticated
        return _Credential(claims=claims)
    key = request.headers.get("x-api-key")
    if key:
        if len(key) > 200:
            raise Unauthenticated
        return _Credential(key=key)
    raise Unauthenticated


# The caller's statement: the calling user or key with its account, read by named columns,
# with what a request reads along (`Caller.along`) as further columns. Its own parameters
# ($`p0`...) come after those of the columns along.
_ACCOUNT_COLUMNS = """a.name AS a_name, a.company_name AS a_company_name, a.email AS a_email,
    a.phone AS a_phone, a.created_at AS a_created_at"""

_USER_STATEMENT = f"""
    SELECT u.id, u.account_id, u.email, u.name, u.role, u.token_version, u.created_at,
           {_ACCOUNT_COLUMNS}{{along}}
    FROM app_user u JOIN account a ON a.id = u.account_id
    WHERE u.id = ${{p0}} AND u.deleted_at IS NULL AND u.token_version = ${{p1}}
      AND u.account_id = ${{p2}}{{roles}}
"""  # noqa: S608  (constant text, no input in it)

# The calling key and its account, by the database function of migration 0013, which also
# writes last_used_at, at most once a minute (a write on every read would cost more than the
# read). Its columns: the key's, used_at, and the account's as _ACCOUNT_COLUMNS.
_API_KEY_STATEMENT = """
    SELECT k.*{along}
    FROM caller_by_api_key(${p0}, ${p1}::interval) k
    WHERE true{roles}
"""


def _statement(credential: _Credential, roles: tuple[Role, ...], along: str, count: int) -> str:
    """The caller's statement for this kind of credential, with `along` (columns over
    `{account}` and parameters $1 to $`count`), and only a caller of one of `roles` (none:
    any) answering a row (once built, kept)."""
    by_key = credential.key is not None
    cache_key = (by_key, roles, along, count)
    statement = _STATEMENTS.get(cache_key)
    if statement is None:
        template, table = (_API_KEY_STATEMENT, "k") if by_key else (_USER_STATEMENT, "u")
        # Roles are our own enum's values, never the client's text.
        allowed = ", ".join(f"'{role.value}'" for role in roles)
        statement = _STATEMENTS[cache_key] = template.format(
            along=f",\n    {along.replace('{account}', f'{table}.account_id')}" if along else "",
            roles=f" AND {table}.role IN ({allowed})" if roles else "",
            p0=count + 1,
            p1=count + 2,
            p2=count + 3,
        )
    return statement


_STATEMENTS: dict[tuple[bool, tuple[Role, ...], str, int], str] = {}


def _arguments(credential: _Credential) -> tuple[object, ...]:
    if credential.key is not None:
        return (api_key_digest(credential.key), _LAST_USED_RESOLUTION)
    assert credential.claims is not None
    claims = credential.claims
    return (claims.user_id, claims.token_version, claims.account_id)


def _principal(row: asyncpg.Record, credential: _Credential) -> Principal:
    account = CallerAccount(
        id=row["account_id"],
        name=row["a_name"],
        company_name=row["a_company_name"],
        email=row["a_email"],
        phone=row["a_phone"],
        created_at=row["a_created_at"],
    )
    role = Role(row["role"])
    if credential.key is None:
        user = CallerUser(
            id=row["id"],
            account_id=row["account_id"],
            email=row["email"],
            name=row["name"],
            role=role,
            token_version=row["token_version"],
            created_at=row["created_at"],
        )
        return Principal(account=account, role=role, user=user)
    api_key = CallerKey(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        role=role,
        integration=Integration(row["integration"]) if row["integration"] is not None else None,
        prefix=row["prefix"],
        created_at=row["created_at"],
        last_used_at=row["used_at"],
    )
    return Principal(account=account, role=role, api_key=api_key)


async def _read_caller(unit: UnitOfWork, credential: _Credential) -> Principal:
    """The caller, by one statement of its own (no ORM, no BEGIN): every request runs one,
    and a revoked key or a changed password is refused at once."""
    statement = _statement(credential, (), "", 0)
    row = await unit.fetchrow_atomic(statement, *_arguments(credential))
    if row is None:
        raise Unauthenticated
    return _principal(row, credential)


@authenticates(BEARER, API_KEY)
async def authenticate(request: Request) -> Principal:
    known: Principal | None = getattr(request.state, "principal", None)  # the role check's
    if known is not None:
        return known
    principal = await _read_caller(request.state.unit, _credential(request))
    request.state.principal = principal
    return principal


class Caller:
    """Who is calling, as the credential says, checked by the database together with the
    request's first statement: `along` runs that statement as columns of the caller's own,
    one round trip for both, and evaluates them only for a caller of the allowed roles. A
    request that fails before it (its Idempotency-Key, its body) has the caller checked
    alone first (`check`), so a 401 or 403 still comes before any other answer; `ApiRoute`
    sees to that, and never answers before the caller is checked. Only for routes open to
    some roles with no further rule (`defer_role`)."""

    def __init__(self, credential: _Credential, roles: tuple[Role, ...]) -> None:
        self._credential = credential
        self._roles = roles
        self._principal: Principal | None = None

    @property
    def principal(self) -> Principal:
        """The caller, once checked."""
        if self._principal is None:
            raise RuntimeError("the caller has not been checked yet")
        return self._principal

    @property
    def account_id(self) -> str:
        return self.principal.account_id

    async def check(self, unit: UnitOfWork) -> Principal:
        """The caller, checked by its statement alone (once); 401 or 403."""
        if self._principal is None:
            principal = await _read_caller(unit, self._credential)
            if principal.role not in self._roles:
                raise Forbidden
            self._principal = principal
        return self._principal

    async def along(self, unit: UnitOfWork, columns: str, *args: object) -> asyncpg.Record:
        """The caller's statement with `columns` (SQL over `{account}`, the caller's account,
        and parameters $1 to $len(args)) read along, evaluated only if the caller may make
        the request; 401 or 403 otherwise, with nothing of `columns` done."""
        statement = _statement(self._credential, self._roles, columns, len(args))
        row = await unit.fetchrow_atomic(statement, *args, *_arguments(self._credential))
        if row is None:
            # No caller, or not of these roles: the caller's statement alone says which (401
            # or 403). Should it pass, the credential was made valid meanwhile: ask again.
            await self.check(unit)
            row = await unit.fetchrow_atomic(statement, *args, *_arguments(self._credential))
            if row is None:
                raise Unauthenticated
        self._principal = _principal(row, self._credential)
        return row


def require_role(
    *roles: Role, refuse: Callable[[Principal], ApiError | None] | None = None
) -> Provided:
    """The caller, if their role is one of `roles` and `refuse` finds nothing to object to;
    else 403. Checked before anything else of the request (its Idempotency-Key included)."""

    @authenticates(BEARER, API_KEY)
    async def check(request: Request) -> Principal:
        principal = await authenticate(request)
        if principal.role not in roles:
            raise Forbidden
        refusal = refuse(principal) if refuse else None
        if refusal is not None:
            raise refusal
        return principal

    return Provided(check)


def defer_role(*roles: Role) -> Provided:
    """The caller as a `Caller`, to be checked (role one of `roles`, else 403) with the
    request's first statement (`Caller.along`) rather than by a statement of its own before
    it: one round trip fewer. What needs no database is refused at once (no credential, a
    token that does not verify)."""

    @authenticates(BEARER, API_KEY)
    async def defer(request: Request) -> Caller:
        caller = Caller(_credential(request), roles)
        unit: UnitOfWork = request.state.unit
        owe_caller_check(request, lambda: caller.check(unit))
        return caller

    return Provided(defer)


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
# A member, checked with the request's first statement (`Caller.along`).
MemberCaller = Annotated[Caller, defer_role(*MEMBER_ROLES)]
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
