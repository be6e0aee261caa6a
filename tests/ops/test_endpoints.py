"""Health, readiness, metrics and the checked-in OpenAPI schema."""

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
