"""The application: routers, middleware and error handlers, assembled by create_app(), and
the worker it runs in the same process unless RUN_WORKER=false."""

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from app.accounts.router import me_router
from app.accounts.router import router as accounts_router
from app.auth.principal import API_KEY, BEARER
from app.auth.router import router as auth_router
from app.billing.router import router as billing_router
from app.config import Settings, get_settings
from app.finance.router import router as finance_router
from app.gateway.factory import create_gateway
from app.kit.clock import Clock, SystemClock
from app.kit.db import Database, create_engine
from app.kit.errors import PROBLEM_CONTENT_TYPE, Problem, install_error_handlers
from app.metrics import GC_FROZEN_OBJECTS
from app.middleware import HttpEnvelopeMiddleware
from app.ops.docs import install_docs
from app.ops.router import router as ops_router
from app.orders.router import router as orders_router
from app.payment_methods.router import router as card_router
from app.webhooks.router import router as webhooks_router
from app.webhooks.urls import UrlGuard
from app.worker.runner import Worker

API_VERSION = "1.0.0"
DESCRIPTION = """Billing back end: account settings, card on file, prepaid balance,
deposits, certificate orders, and monthly subscriptions with their invoices. Every error is
RFC 9457 problem details with a stable `code`."""


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastAPI:
    """The application; `clock` is the time the billing rules see (tests pass one they move)."""
    settings = settings or get_settings()
    clock = clock or SystemClock()
    if len(settings.secret_key) < 32:
        raise RuntimeError("SECRET_KEY must be set to at least 32 characters")
    database = Database(create_engine(settings))
    gateway = create_gateway(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        worker_task = None
        if settings.run_worker:
            worker_task = asyncio.create_task(
                Worker(settings, database, gateway, clock=clock).run()
            )
        # Everything built so far (the imported libraries, the app, its routes) lives as long
        # as the process: out of the collector's sight, a full collection scans only what
        # requests made. Measured under load: every 2 to 5 s a full collection of the whole
        # heap stopped each worker's event loop for 150 to 240 ms; frozen, 2 to 6 ms.
        gc.collect()
        gc.freeze()
        GC_FROZEN_OBJECTS.set(gc.get_freeze_count())
        yield
        if worker_task is not None:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task
        await gateway.aclose()
        await database.dispose()

    app = FastAPI(
        title="Billing API",
        version=API_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by install_docs instead: FastAPI's own pages load their scripts from a CDN.
        docs_url=None,
        redoc_url=None,
        # The service's metrics are its own (app.metrics, /metrics), and it sets up no
        # OpenTelemetry: FastAPI's built-in telemetry would look the three global providers
        # up (through os.environ) on every request to find each unconfigured, 5.7 µs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.database = database
    app.state.gateway = gateway
    app.state.clock = clock
    app.state.webhook_guard = UrlGuard(frozenset(settings.webhook_allowed_hosts))

    # Routes are matched one after another, in this order: the hot path (orders, then the
    # balance) first. Each router's routes are complete (prefix, tags, ApiRoute), so they go
    # straight into the app's list: FastAPI 0.165 keeps an included router as a branch of its
    # own, matched once to enter it and again inside (about 55,000 instructions an order).
    routers = (
        orders_router,
        finance_router,
        ops_router,
        accounts_router,
        auth_router,
        me_router,
        card_router,
        billing_router,
        webhooks_router,
    )
    for router in routers:
        app.router.routes.extend(router.routes)
    install_docs(app)
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-API-Key",
                "X-Request-ID",
            ],
            expose_headers=["X-Request-ID", "Idempotent-Replayed", "Retry-After"],
        )
    app.add_middleware(HttpEnvelopeMiddleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error documented as problem+json instead of its 422 model."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    components_root = schema.setdefault("components", {})
    components_root["securitySchemes"] = {
        scheme.scheme_name: scheme.model.model_dump(mode="json", by_alias=True, exclude_none=True)
        for scheme in (API_KEY, BEARER)
    }
    problem_schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem_schema.pop("$defs", {}))
    components["Problem"] = problem_schema
    problem = {
        "description": "Problem details (RFC 9457)",
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    for path, path_item in schema.get("paths", {}).items():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            _document_failures(operation, path, problem)
            responses["default"] = problem
            _document_idempotency_key(operation)
    app.openapi_schema = schema
    return schema


# What any route of a kind can answer, beside its own failures (app.kit.errors.errors).
_UNAUTHENTICATED = "unauthenticated: no credentials, or ones expired or revoked"
_FORBIDDEN = "forbidden: the caller's role does not allow it (or its integration)"
_NOT_FOUND = "not_found: no such object in the caller's account"
_INVALID = "validation_error: the request does not match this schema"
_UNAVAILABLE = "service_unavailable: the database cannot be reached or is busy (Retry-After)"
_IN_PROCESS = {"/healthz", "/metrics"}  # answered without the database


def _document_failures(operation: dict[str, Any], path: str, problem: dict[str, Any]) -> None:
    """Every failure status a route answers, each with the problem+json schema and the codes
    it carries: its own (from the route) and those of every route of its kind."""
    responses: dict[str, Any] = operation["responses"]
    parameters = operation.get("parameters", [])
    names = {p["name"] for p in parameters if p["in"] == "header"}
    found: dict[str, list[str]] = {}

    def add(status: int, codes: str) -> None:
        found.setdefault(str(status), []).append(codes)

    if operation.get("security"):
        add(401, _UNAUTHENTICATED)
        add(403, _FORBIDDEN)
    if any(p["in"] == "path" for p in parameters):
        add(404, _NOT_FOUND)
    if parameters or "requestBody" in operation:
        add(422, _INVALID)
    if "requestBody" in operation:
        add(413, "payload_too_large: a body over 1 MiB")
    if "Idempotency-Key" in names:
        if operation.get("x-idempotency-key") == "required":
            add(400, "idempotency_key_required")
        add(409, "idempotency_key_in_use: a request with this key is still running")
        add(422, "idempotency_key_reused: the key came with another request")
    if path not in _IN_PROCESS:
        add(503, _UNAVAILABLE)
    for status, response in list(responses.items()):
        if status.isdigit() and int(status) >= 400:
            found.setdefault(status, []).insert(0, response.get("description", ""))
    for status in sorted(found):
        responses[status] = {
            "description": "; ".join(dict.fromkeys(c for c in found[status] if c)),
            "content": problem["content"],
        }


# 1-255 printable ASCII characters, none of them blank at either end (HTTP trims those).
IDEMPOTENCY_KEY_PATTERN = r"^[!-~](?:[ -~]{0,253}[!-~])?$"


def _document_idempotency_key(operation: dict[str, Any]) -> None:
    """The Idempotency-Key header as the guard checks it: required where the route says so
    (deposits and orders), optional on every other POST, never null."""
    required = operation.get("x-idempotency-key") == "required"
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "header" and parameter["name"] == "Idempotency-Key":
            parameter["required"] = required
            parameter["schema"] = {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": IDEMPOTENCY_KEY_PATTERN,
                "description": parameter["schema"].get("description", ""),
            }
