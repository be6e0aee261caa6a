"""The route class of every endpoint: one unit of work per request, committed before the
response is sent, Idempotency-Key on every authenticated POST, and the request's own
context given to the endpoint.

For each request `ApiRoute` runs FastAPI's handler (validation, endpoint, serialisation)
inside `Database.run`, so the request's statements share one transaction that commits, or
is retried from the start on a serialization failure or deadlock, before a byte is sent.
An `ApiError` rolls the unit back and is answered as problem+json.

The request's context (who is calling, the unit of work, the idempotency claim, the app's
gateway, clock and settings) is declared on the endpoint like a dependency, as a parameter
annotated with `Provided`: `principal: RequireMember, unit: Unit`. `ApiRoute` provides these
itself, from the request, before FastAPI validates the rest of it: FastAPI 0.165 solves each
`Depends` node afresh on every request (its cache key, its kind, four kinds of parameters),
about 90,000 instructions a node, more than what any of these does. `Depends` stays for what
FastAPI must validate: the page's query parameters, the token endpoint's form.

A provider may leave the check of the caller to the request's first statement
(`app.auth.principal.Caller`, one round trip fewer) and say how to make it alone
(`owe_caller_check`). `ApiRoute` makes that check before answering any client error (so a
401 or 403 still comes before the Idempotency-Key's or the body's) and before any answer.

Idempotency: on an authenticated POST the route holds the key after the caller's
authentication and role check (a 401 or 403 reserves nothing), and reserves it in the
request's unit (`app.kit.idempotency`). The answer is stored in the same unit; a failure's
answer (a 4xx other than 401/403) is stored after the rollback. An endpoint that takes
`IdempotencyClaimDep` reserves the key itself, in the service's first statement.
"""

import inspect
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_args, get_origin, get_type_hints

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase

from app.kit import idempotency
from app.kit.db import Database, UnitOfWork
from app.kit.errors import ApiError

IDEMPOTENCY_REQUIRED = {"x-idempotency-key": "required"}
_KEY_HEADER = "idempotency-key"
_AUTHENTICATES = "__authenticates__"
F = TypeVar("F", bound=Callable[..., Any])
Provide = Callable[[Request], Awaitable[Any]]


@dataclass(frozen=True)
class Provided:
    """Marks an endpoint parameter that `ApiRoute` provides: `Annotated[T, Provided(f)]`,
    where `f(request)` is an `async def` that reads the request or the app (and may raise
    an `ApiError`). Each is awaited once per attempt, in the order of the endpoint's
    parameters, the caller first."""

    provide: Provide

    def __post_init__(self) -> None:
        if not inspect.iscoroutinefunction(self.provide):
            raise TypeError(f"{self.provide.__qualname__} must be an async def")


def secret_fields(*names: str) -> dict[str, list[str]]:
    """Mark response fields that hold a secret shown once: the stored copy (and a replay)
    carries null there, so the secret never reaches the database."""
    return {"x-secret-fields": list(names)}


def authenticates(*schemes: SecurityBase) -> Callable[[F], F]:
    """Mark a provider that says who is calling, by one of `schemes`: the idempotency key is
    held after it, and the OpenAPI document names the schemes on each operation that uses
    it."""

    def mark(provider: F) -> F:
        setattr(provider, _AUTHENTICATES, schemes)
        return provider

    return mark


def owe_caller_check(request: Request, check: Callable[[], Awaitable[object]]) -> None:
    """Called by a provider that leaves the caller's check to the request's first statement
    (`app.auth.principal.Caller`): `check` makes it alone, raising 401 or 403. `ApiRoute`
    awaits it before any other client error and before any answer (once made, it costs
    nothing)."""
    request.state.caller_check = check


async def _settle_caller_check(request: Request) -> None:
    check: Callable[[], Awaitable[object]] | None = request.state.caller_check
    if check is not None:
        await check()
        request.state.caller_check = None


async def get_unit(request: Request) -> UnitOfWork:
    unit: UnitOfWork = request.state.unit
    return unit


Unit = Annotated[UnitOfWork, Provided(get_unit)]

# The guard reads the header itself (a declared Header parameter would cost FastAPI's
# parameter handling on every request) and checks it (idempotency.check_key), so a bad key
# is the same 422 however the route reads it; ApiRoute declares it in the OpenAPI document,
# and app.main._document_idempotency_key states its rules there.
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


async def _claim(
    request: Request, caller: idempotency.HasAccount, key: str | None
) -> idempotency.Claim | None:
    if key is None:
        if _extra(request).get("x-idempotency-key") == "required":
            raise idempotency.key_required()
        return None
    idempotency.check_key(key)
    secret = request.app.state.settings.secret_key
    path, body = request.scope["path"], await request.body()
    claim = idempotency.Claim(
        caller, key, idempotency.fingerprint(secret, request.method, path, body)
    )
    request.state.idempotency = claim
    return claim


def _guard(reserve: bool) -> Provide:
    """The caller's claim on the request's Idempotency-Key, reserved in the unit unless the
    endpoint's service reserves it itself."""

    async def guard(request: Request) -> None:
        caller: idempotency.HasAccount = request.state.caller  # what authenticated it
        claim = await _claim(request, caller, request.headers.get(_KEY_HEADER))
        if claim is not None and reserve:
            await _settle_caller_check(request)  # the key is the account's
            await idempotency.reserve(request.state.unit, claim)

    return guard


async def _read_claim(request: Request) -> idempotency.Claim:
    """The claim the route's guard made, for an endpoint whose service reserves the key
    itself (the guard runs before the endpoint's own parameters)."""
    claim: idempotency.Claim | None = request.state.idempotency
    if claim is None:
        raise idempotency.key_required()
    return claim


IdempotencyClaimDep = Annotated[idempotency.Claim, Provided(_read_claim)]


async def _reserved_key(request: Request) -> str:
    """The key the guard reserved, for a service that records it on what it creates."""
    return (await _read_claim(request)).key


IdempotencyKeyDep = Annotated[str, Provided(_reserved_key)]


def _provided_by(annotation: Any) -> Provided | None:
    if get_origin(annotation) is not Annotated:
        return None
    return next((meta for meta in get_args(annotation)[1:] if isinstance(meta, Provided)), None)


_REQUEST = "api_route_request"


def _endpoint_for_fastapi(
    endpoint: Callable[..., Any],
) -> tuple[Callable[..., Any], dict[str, Provide]]:
    """The endpoint as FastAPI sees it, without its `Provided` parameters (FastAPI validates
    the rest), and those parameters' providers by name. The endpoint is called with what
    FastAPI solved and what the route provided (`request.state.provided`)."""
    hints = get_type_hints(endpoint, include_extras=True)
    signature = inspect.signature(endpoint)
    providers: dict[str, Provide] = {}
    kept: list[inspect.Parameter] = []
    request_name = None
    for parameter in signature.parameters.values():
        annotation = hints.get(parameter.name, parameter.annotation)
        provided = _provided_by(annotation)
        if provided is not None:
            providers[parameter.name] = provided.provide
            continue
        if annotation is Request:
            request_name = parameter.name
        kept.append(parameter.replace(annotation=annotation))
    if not providers:
        return endpoint, providers
    if not inspect.iscoroutinefunction(endpoint):
        raise TypeError(f"{endpoint.__qualname__} must be an async def")
    hidden = request_name is None
    name = request_name or _REQUEST
    if hidden:
        kept.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Request))

    async def call(**values: Any) -> Any:
        request: Request = values.pop(name) if hidden else values[name]
        return await endpoint(**values, **request.state.provided)

    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=kept, return_annotation=hints.get("return", signature.return_annotation)
    )
    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(call, attribute, getattr(endpoint, attribute))
    return call, providers


def _operation_id(route: APIRoute) -> str:
    return route.name


class ApiRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = {method.upper() for method in kwargs.get("methods") or ()}
        endpoint, providers = _endpoint_for_fastapi(endpoint)
        principal = next(
            (provide for provide in providers.values() if hasattr(provide, _AUTHENTICATES)),
            None,
        )
        # What is awaited before FastAPI's handler, in order: the caller, the guard, the rest.
        steps: list[tuple[str | None, Provide]] = []
        if principal is not None:
            schemes: tuple[SecurityBase, ...] = getattr(principal, _AUTHENTICATES)
            security: list[dict[str, list[str]]] = [{scheme.scheme_name: []} for scheme in schemes]
            kwargs["openapi_extra"] = {"security": security, **(kwargs.get("openapi_extra") or {})}
            steps.append((None, principal))
        if "POST" in methods and principal is not None:
            reserves_itself = _read_claim in providers.values()
            steps.append((None, _guard(reserve=not reserves_itself)))
            extra = kwargs["openapi_extra"]
            extra["parameters"] = [*extra.get("parameters", []), dict(_KEY_PARAMETER)]
        steps += providers.items()
        self._steps = steps
        self._principal = principal
        # operationIds are the endpoints' own names: create_order, list_invoices.
        kwargs["generate_unique_id_function"] = _operation_id
        super().__init__(path, endpoint, **kwargs)

    async def _provide(self, request: Request) -> dict[str, Any]:
        provided: dict[str, Any] = {}
        done: dict[Provide, Any] = {}
        for name, provide in self._steps:
            value = done[provide] if provide in done else await provide(request)
            done[provide] = value
            if provide is self._principal:
                request.state.caller = value
            if name is not None:
                provided[name] = value
        return provided

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        secrets = list((self.openapi_extra or {}).get("x-secret-fields") or [])

        async def handle(request: Request) -> Response:
            database: Database = request.app.state.database

            async def attempt(unit: UnitOfWork) -> Response:
                request.state.unit = unit
                request.state.idempotency = None
                request.state.caller_check = None
                try:
                    request.state.provided = await self._provide(request)
                    response = await handler(request)
                except (ApiError, RequestValidationError) as error:
                    # Who is calling is answered first: 401 or 403 before any other error.
                    if isinstance(error, RequestValidationError) or error.status < 500:
                        await _settle_caller_check(request)
                    if not isinstance(error, ApiError) or not error.keeps_changes:
                        raise
                    response = error.response()  # committed with what the request wrote
                # Nothing is answered to a caller not checked (a deferred check not yet made).
                await _settle_caller_check(request)
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
