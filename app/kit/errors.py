"""Errors: ApiError for every failure a client can act on, and the handlers that render
every error (ours, FastAPI's and Starlette's) as RFC 9457 problem details with a stable code."""

import json
import logging
import re
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.kit.request_context import current_request_id

logger = logging.getLogger("app.kit.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://billing.example.com/problems/"


class ApiError(Exception):
    """A failure with a stable snake_case code, e.g. ApiError("insufficient_funds", 402, "...")."""

    def __init__(
        self,
        code: str,
        status: int,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        keeps_changes: bool = False,
    ) -> None:
        super().__init__(detail or code)
        self.code = code
        self.status = status
        self.detail = detail or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extra = extra or {}
        # What the request wrote stands (committed with the answer), as when a failure's
        # answer was stored under its Idempotency-Key by the statement that failed.
        self.keeps_changes = keeps_changes

    def response(self) -> Response:
        return problem_response(
            self.code, self.status, self.detail, headers=self.headers, extra=self.extra
        )


class NotFound(ApiError):
    def __init__(self, what: str = "resource") -> None:
        super().__init__("not_found", 404, f"No such {what}.")


class Forbidden(ApiError):
    def __init__(self, detail: str = "Your role does not allow this action.") -> None:
        super().__init__("forbidden", 403, detail)


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every 4xx and 5xx body."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str | None = None
    errors: list[FieldError] | None = None
    decline_code: str | None = None


def problem_body(code: str, status: int, detail: str, extra: dict[str, Any] | None = None) -> bytes:
    """The problem+json body of a failure: what `problem_response` sends, and what a
    statement stores to answer later (a balance order's 402)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": current_request_id(),
    }
    body.update(extra or {})
    return _PROBLEM_JSON.encode(body).encode()


# One encoder for every problem body: json.dumps with options builds a new one each call.
_PROBLEM_JSON = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def problem_response(
    code: str,
    status: int,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body = problem_body(code, status, detail, extra)
    return Response(body, status_code=status, headers=headers, media_type=PROBLEM_CONTENT_TYPE)


# Starlette raises these for routing failures; give each a stable code.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _field_path(location: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in location)


def _validation_message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "is invalid"))
    # Pydantic prefixes messages from our validators; the client does not need to know.
    return message.removeprefix("Value error, ")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return problem_response(exc.code, exc.status, exc.detail, headers=exc.headers, extra=exc.extra)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"field": _field_path(error.get("loc", ())), "message": _validation_message(error)}
        for error in exc.errors()
    ]
    return problem_response(
        "validation_error",
        422,
        "The request is not valid; see errors.",
        extra={"errors": errors},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        detail = "No such resource."
    if exc.status_code == 405:
        # The router names only the methods of the first route that matched the path; a
        # path served by several routes (GET and PATCH /v1/account) allows all of theirs.
        allowed = allowed_methods(request.app, request.url.path)
        if allowed:  # else a route outside the schema (the docs pages): the router's own
            headers["Allow"] = ", ".join(allowed)
    return problem_response(code, exc.status_code, detail, headers=headers)


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at `path` (HEAD wherever GET is), in a stable order."""
    index: list[tuple[re.Pattern[str], set[str]]] | None = getattr(app.state, "allow_index", None)
    if index is None:
        index = []
        for template, operations in app.openapi().get("paths", {}).items():
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            methods = {method.upper() for method in operations}
            if "GET" in methods:
                methods.add("HEAD")
            index.append((re.compile(regex + "$"), methods))
        app.state.allow_index = index
    allowed: set[str] = set()
    for pattern, methods in index:
        if pattern.match(path):
            allowed |= methods
    return [method for method in _METHOD_ORDER if method in allowed]


def internal_error_response() -> Response:
    return problem_response(
        "internal_error",
        500,
        "Something went wrong on our side; quote the request id if you contact us.",
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def errors(codes_by_status: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route's own failures, each status with the codes it answers
    (`{402: "insufficient_funds, card_declined"}`); the OpenAPI document gives each the
    problem+json schema, beside the failures every route of its kind has."""
    return {status: {"description": codes} for status, codes in codes_by_status.items()}


def validation_error(field: str, message: str) -> ApiError:
    """A 422 for a rule the schema alone cannot check, shaped like the schema's own errors."""
    return ApiError(
        "validation_error",
        422,
        "The request is not valid; see errors.",
        extra={"errors": [{"field": field, "message": message}]},
    )
