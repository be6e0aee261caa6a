"""The application: routers, middleware and error handlers, assembled by create_app(), and
the worker it runs in the same process unless RUN_WORKER=false."""

import asyncio
import contextlib
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
        # operationIds are the endpoints' own names: create_order, list_invoices.
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.database = database
    app.state.gateway = gateway
    app.state.clock = clock
    app.state.webhook_guard = UrlGuard(frozenset(settings.webhook_allowed_hosts))

    # Routes are matched one after another, in this order: the hot path (orders, then the
    # balance) first.
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
        app.include_router(router)
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
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["default"] = problem
            _document_idempotency_key(operation)
    app.openapi_schema = schema
    return schema


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
