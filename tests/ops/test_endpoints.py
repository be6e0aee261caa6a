"""Health, readiness, metrics and the checked-in OpenAPI schema."""

import json
import re

import httpx

from app.openapi_dump import OPENAPI_FILE, served_schema


async def test_healthz_says_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_reports_the_latest_migration(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert (
        'http_request_duration_seconds_count{method="GET",route="/healthz",status="200"}'
        in response.text
    )


def test_checked_in_openapi_equals_the_served_schema() -> None:
    assert OPENAPI_FILE.read_text() == served_schema(), "run `make openapi` and commit the result"


def test_every_operation_id_is_the_endpoints_own_snake_case_name() -> None:
    """SPEC §13: readable operationIds, so a generated client has create_order, not
    create_order_v1_orders_post."""
    schema = json.loads(served_schema())
    ids = [op["operationId"] for item in schema["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", i) for i in ids), ids
    assert {"create_order", "list_invoices", "create_deposit", "get_balance"} <= set(ids)
    assert not [i for i in ids if "_v1_" in i or i.endswith(("_get", "_post"))]


def test_every_failure_status_of_a_route_is_documented_as_problem_json() -> None:
    """SPEC §13: every status a route answers, with its schema; money routes name their
    codes and require the Idempotency-Key."""
    schema = json.loads(served_schema())
    order = schema["paths"]["/v1/orders"]["post"]
    assert {"201", "202", "400", "401", "402", "403", "409", "413", "422", "503"} <= set(
        order["responses"]
    )
    assert "insufficient_funds" in order["responses"]["402"]["description"]
    [header] = [p for p in order["parameters"] if p["name"] == "Idempotency-Key"]
    assert header["required"] is True
    assert order["requestBody"]["content"]["application/json"]["schema"]
    deposit = schema["paths"]["/v1/finance/deposits"]["post"]
    assert {"402", "409"} <= set(deposit["responses"])
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if status == "default" or int(status) >= 400:
                    assert "application/problem+json" in response["content"], (path, method)
            if any(p["in"] == "path" for p in operation.get("parameters", [])):
                assert "404" in operation["responses"], (path, method)
            if operation.get("security"):
                assert {"401", "403"} <= set(operation["responses"]), (path, method)
    pdf = schema["paths"]["/v1/invoices/{invoice_id}.pdf"]["get"]["responses"]["200"]
    assert list(pdf["content"]) == ["application/pdf"]
