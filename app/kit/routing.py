"""The route class of every endpoint: one unit of work per request, committed before the
response is sent, and Idempotency-Key on every authenticated POST.

For each request `ApiRoute` runs FastAPI's handler (dependencies, endpoint, serialisation)
inside `Database.run`, so the request's statements share one transaction that commits, or
is retried from the start on a serialization failure or deadlock, before a byte is sent.
An `ApiError` rolls the unit back and is answered as problem+json.

Idempotency: on an authenticated POST the route adds a guard that runs after the caller's
authentication and role check (a 401 or 403 reserves nothing), and reserves the key in the
request's unit (`app.kit.idempotency`). The answer is stored in the same unit; a failure's
answer (a 4xx other than 401/403) is stored after the rollback. An endpoint that takes
`IdempotencyClaimDep` reserves the key itself, in the service's first statement.
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_dependant
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase

from app.kit import idempotency
from app.kit.db import Database, UnitOfWork
from app.kit.errors import ApiError

IDEMPOTENCY_REQUIRED = {"x-idempotency-key": "required"}
_KEY_HEADER = "idempotency-key"
_AUTHENTICATES = "__authenticates__"
F = TypeVar("F", bound=Callable[..., Any])


def secret_fields(*names: str) -> dict[str, list[str]]:
    """Mark response fields that hold a secret shown once: the stored copy (and a replay)
    carries null there, so the secret never reaches the database."""
    return {"x-secret-fields": list(names)}


def authenticates(*schemes: SecurityBase) -> Callable[[F], F]:
    """Mark a dependency that says who is calling, by one of `schemes`: the guard runs after
    it, and the OpenAPI document names the schemes on each operation that uses it."""

    def mark(dependency: F) -> F:
        setattr(dependency, _AUTHENTICATES, schemes)
        return dependency

    return mark


class HasAccount(Protocol):
    @property
    def account_id(self) -> str: ...


async def get_unit(request: Request) -> UnitOfWork:
    unit: UnitOfWork = request.state.unit
    return unit


Unit = Annotated[UnitOfWork, Depends(get_unit)]

# The guard reads the header itself (a declared Header parameter costs FastAPI more per
# request than the read) and checks it (idempotency.check_key), so a bad key is the same 422
# however the route reads it; ApiRoute declares it in the OpenAPI document, and
# app.main._document_idempotency_key states its rules there.
_KEY_DESCRIPTION = (
    "1-255 printable characters; a retry with the same key is answered with the first "
    "response and moves no money again."
)
_KEY_PARAMETER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": _KEY_DESCRIPTION,
    "schema": {"type": "string", "description": _KEY_DESCRIPTION},
}


def _extra(request: Request) -> dict[str, Any]:
    return getattr(request.scope.get("route"), "openapi_extra", None) or {}


async def _claim(request: Request, account_id: str, key: str | None) -> idempotency.Claim | None:
    if key is None:
        if _extra(request).get("x-idempotency-key") == "required":
            raise idempotency.key_required()
        return None
    idempotency.check_key(key)
    secret = request.app.state.settings.secret_key
    path, body = request.scope["path"], await request.body()
    claim = idempotency.Claim(
        account_id, key, idempotency.fingerprint(secret, request.method, path, body)
    )
    request.state.idempotency = claim
    return claim


def _guard(principal_dependency: Callable[..., Any], reserve: bool) -> Callable[..., Any]:
    async def guard(
        request: Request, principal: Annotated[HasAccount, Depends(principal_dependency)]
    ) -> idempotency.Claim | None:
        claim = await _claim(request, principal.account_id, request.headers.get(_KEY_HEADER))
        if claim is not None and reserve:
            await idempotency.reserve(request.state.unit, claim)
        return claim

    return guard


async def _read_claim(request: Request) -> idempotency.Claim:
    """The claim the route's guard made, for an endpoint whose service reserves the key
    itself (the guard runs first: route dependencies come before the endpoint's own)."""
    claim: idempotency.Claim | None = request.state.idempotency
    if claim is None:
        raise idempotency.key_required()
    return claim


IdempotencyClaimDep = Annotated[idempotency.Claim, Depends(_read_claim)]


async def _reserved_key(request: Request) -> str:
    """The key the guard reserved, for a service that records it on what it creates."""
    return (await _read_claim(request)).key


IdempotencyKeyDep = Annotated[str, Depends(_reserved_key)]


def _schemes_of(call: Callable[..., Any]) -> tuple[SecurityBase, ...]:
    schemes: tuple[SecurityBase, ...] = getattr(call, _AUTHENTICATES, ())
    return schemes


def _uses_authentication(dependant: Dependant) -> bool:
    return any(
        getattr(dep.call, _AUTHENTICATES, False) or _uses_authentication(dep)
        for dep in dependant.dependencies
    )


class ApiRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = {method.upper() for method in kwargs.get("methods") or ()}
        dependant = get_dependant(path=path, call=endpoint)
        principal = next(
            (
                dep.call
                for dep in dependant.dependencies
                if dep.call is not None
                and (getattr(dep.call, _AUTHENTICATES, False) or _uses_authentication(dep))
            ),
            None,
        )
        if principal is not None:
            schemes = _schemes_of(principal)
            security: list[dict[str, list[str]]] = [{scheme.scheme_name: []} for scheme in schemes]
            kwargs["openapi_extra"] = {"security": security, **(kwargs.get("openapi_extra") or {})}
        if "POST" in methods and principal is not None:
            reserves_itself = any(dep.call is _read_claim for dep in dependant.dependencies)
            guard = _guard(principal, reserve=not reserves_itself)
            kwargs["dependencies"] = [Depends(guard), *(kwargs.get("dependencies") or [])]
            extra = kwargs["openapi_extra"]
            extra["parameters"] = [*extra.get("parameters", []), dict(_KEY_PARAMETER)]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        secrets = list((self.openapi_extra or {}).get("x-secret-fields") or [])

        async def handle(request: Request) -> Response:
            database: Database = request.app.state.database

            async def attempt(unit: UnitOfWork) -> Response:
                request.state.unit = unit
                request.state.idempotency = None
                try:
                    response = await handler(request)
                except ApiError as error:
                    if not error.keeps_changes:
                        raise
                    response = error.response()  # committed with what the request wrote
                claim: idempotency.Claim | None = request.state.idempotency
                unanswered = claim is not None and claim.held and not claim.answered
                if unanswered and response.status_code < 500:
                    assert claim is not None
                    await idempotency.store_answer(unit, claim, response, secrets)
                return response

            try:
                return await database.run(attempt)
            except idempotency.Replay as replay:
                return replay.response
            except ApiError as error:
                response = error.response()
                await _after_failure(request, database, error.status, response)
                return response
            except Exception:
                await _after_failure(request, database, 500, None)
                raise

        return handle


async def _after_failure(
    request: Request, database: Database, status: int, response: Response | None
) -> None:
    """Keep a failure's answer under the key it held, or free a key that a failure on our
    side left reserved. Nothing is kept for a request that never held the key (its key was
    in use, reused, or it failed before reserving), nor for a 401 or 403, so the key still
    works for a caller who may make the request."""
    claim: idempotency.Claim | None = getattr(request.state, "idempotency", None)
    unit: UnitOfWork | None = getattr(request.state, "unit", None)
    if claim is None or not claim.held or claim.answered or status in (401, 403):
        return
    # Part of the request committed (a payment's first phase): the reservation with it.
    committed = unit is not None and unit.commits > 0
    try:
        if status >= 500 or response is None:
            if committed:
                await database.run(lambda fresh: idempotency.release(fresh, claim))
        elif committed:
            secrets = list(_extra(request).get("x-secret-fields") or [])
            await database.run(
                lambda fresh: idempotency.store_answer(fresh, claim, response, secrets)
            )
        else:
            await database.run(lambda fresh: idempotency.store_lost_answer(fresh, claim, response))
    except ApiError:
        # The database went away meanwhile: the reservation's lease frees the key.
        return
