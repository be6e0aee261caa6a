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
