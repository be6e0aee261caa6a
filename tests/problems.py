"""What a client sees of a failure: RFC 9457 problem details with a stable `code`."""

from typing import Any

import httpx

PROBLEM_CONTENT_TYPE = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert the response is a problem+json `status` with `code`, and return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"]
    assert body["title"]
    assert body["detail"]
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    """The `field` of every entry of a validation_error's `errors` array."""
    errors = body["errors"]
    assert errors, body
    for error in errors:
        assert set(error) == {"field", "message"}, error
        assert error["message"]
    return {error["field"] for error in errors}


def assert_unauthenticated(response: httpx.Response) -> None:
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"
