"""The service as browsers meet it, in headless Chromium against a real server process: a
single-page app on another origin (CORS, the password flow, an Idempotency-Key, the balance),
and the /docs and /redoc pages rendering every operation with nothing loaded from elsewhere."""

import json
import threading
from collections.abc import AsyncIterator, Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from fastapi import FastAPI

from tests.browser import Browser, Page, chromium
from tests.conftest import Member, SignUp
from tests.money import balance, fund
from tests.processes import ServiceProcess, service_environment
from tests.smtp import SmtpServer

SPA_DIR = Path(__file__).parent / "spa"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def spa_port() -> Iterator[int]:
    """The single-page app's files, served by a second HTTP server on a port of its own."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=SPA_DIR))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
async def service(
    app: FastAPI, smtp_server: SmtpServer, spa_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceProcess]:
    environment = service_environment(
        app.state.settings,
        smtp_server,
        run_worker=False,
        cors_origins=f"http://127.0.0.1:{spa_port}",
    )
    process = ServiceProcess.api(environment, tmp_path_factory.mktemp("service"), "api")
    await process.start()
    yield process
    await process.stop()


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    async with chromium(tmp_path_factory.mktemp("chromium")) as running:
        yield running


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    tab = await browser.new_page()
    yield tab
    await tab.close()


SHOWN = "Object.fromEntries([...document.querySelectorAll('[id]')].map(e => [e.id, e.textContent]))"
SETTLED = "document.body.dataset.state !== 'working' && document.body.dataset.state"


async def open_spa(
    page: Page, origin: str, service: ServiceProcess, customer: Member
) -> dict[str, str]:
    """The app's page from `origin`, once it has done its work: what it shows, by element id."""
    query = urlencode({"api": service.url, "email": customer.email, "password": customer.password})
    await page.goto(f"{origin}/index.html?{query}")
    await page.wait_for(SETTLED)
    shown: dict[str, str] = await page.evaluate(SHOWN)
    shown["state"] = await page.evaluate("document.body.dataset.state")
    return shown


async def test_a_single_page_app_on_an_allowed_origin_orders_and_shows_the_balance(
    client: httpx.AsyncClient, sign_up: SignUp, service: ServiceProcess, spa_port: int, page: Page
) -> None:
    customer = await sign_up()
    await fund(client, customer, "100.00")

    shown = await open_spa(page, f"http://127.0.0.1:{spa_port}", service, customer)

    assert shown["state"] == "done", shown["error"]
    assert shown["order-id"].startswith("ord_")
    assert shown["order-status"] == "paid"
    assert shown["order-amount"] == "49.00 USD"
    assert shown["order-payment-method"] == "balance"
    assert shown["balance"] == "51.00 USD"
    # The retry with the same key is the first answer again, and the page can tell (the
    # header is exposed to it); so is the request id.
    assert shown["retry-order-id"] == shown["order-id"]
    assert shown["retry-replayed"] == "true"
    assert len(shown["request-id"]) >= 16
    orders = await client.get("/v1/orders", headers=customer.headers)
    assert [order["id"] for order in orders.json()["data"]] == [shown["order-id"]]
    assert await balance(client, customer) == "51.00"


async def test_a_page_from_an_origin_not_in_cors_origins_cannot_read_the_api(
    client: httpx.AsyncClient, sign_up: SignUp, service: ServiceProcess, spa_port: int, page: Page
) -> None:
    customer = await sign_up()
    await fund(client, customer, "100.00")

    # The same page from another origin (localhost is not 127.0.0.1 to a browser).
    shown = await open_spa(page, f"http://localhost:{spa_port}", service, customer)

    assert shown["state"] == "failed"
    assert shown["error"] == "TypeError: Failed to fetch"
    assert shown["order-id"] == ""
    assert (await client.get("/v1/orders", headers=customer.headers)).json()["data"] == []
    assert await balance(client, customer) == "100.00"


async def served_summaries(service: ServiceProcess) -> set[str]:
    async with httpx.AsyncClient(base_url=service.url) as http:
        schema = (await http.get("/openapi.json")).json()
    return {
        operation["summary"] for item in schema["paths"].values() for operation in item.values()
    }


def assert_nothing_from_elsewhere(page: Page, origin: str) -> None:
    """Every request went to the service (or was data the page made itself), none was blocked
    by the page's Content-Security-Policy, and nothing went wrong in the page."""
    elsewhere = [
        url
        for url in page.requests
        if not url.startswith((f"{origin}/", "data:", f"blob:{origin}/"))
    ]
    assert elsewhere == []
    assert page.blocked == []
    assert page.errors == []


async def test_swagger_ui_shows_every_operation_and_calls_the_api_with_nothing_from_elsewhere(
    service: ServiceProcess, page: Page
) -> None:
    summaries = await served_summaries(service)
    assert "Order a certificate, paid from the balance or by card" in summaries

    await page.goto(f"{service.url}/docs")
    await page.wait_for("document.querySelectorAll('.opblock-summary-description').length")
    shown = await page.evaluate(
        "[...document.querySelectorAll('.opblock-summary-description')].map(e => e.textContent)"
    )
    assert set(shown) == summaries

    # Try it out on the liveness check: the answer the service gave, shown in the page.
    await page.evaluate("""(() => {
        const summary = [...document.querySelectorAll('.opblock-summary-description')]
            .find(e => e.textContent === 'The process is alive');
        summary.closest('.opblock-summary').querySelector('button').click();
    })()""")
    await page.wait_for("!!document.querySelector('.opblock.is-open .try-out__btn')")
    await page.evaluate("document.querySelector('.opblock.is-open .try-out__btn').click()")
    await page.wait_for("!!document.querySelector('.opblock.is-open .execute')")
    await page.evaluate("document.querySelector('.opblock.is-open .execute').click()")
    answer = "document.querySelector('.opblock.is-open .live-responses-table')"
    body = await page.wait_for(
        f"{answer}?.querySelector('.response-col_description pre')?.innerText"
    )
    status = await page.evaluate(f"{answer}.querySelector('tbody .response-col_status').innerText")
    assert (status.strip(), json.loads(body)) == ("200", {"status": "ok"})

    assert_nothing_from_elsewhere(page, service.url)


async def test_redoc_shows_every_operation_and_searches_with_nothing_from_elsewhere(
    service: ServiceProcess, page: Page
) -> None:
    summaries = await served_summaries(service)

    await page.goto(f"{service.url}/redoc")
    await page.wait_for("document.querySelectorAll('[data-section-id^=\"operation/\"]').length")
    shown = await page.evaluate(
        "[...document.querySelectorAll('[data-section-id^=\"operation/\"] h2')]"
        ".map(e => e.textContent.trim())"
    )
    assert set(shown) == summaries

    # The search box, whose index runs in a web worker.
    await page.evaluate("""(() => {
        const box = document.querySelector('input[placeholder="Search..."]');
        const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
        setValue.call(box, 'deposit');
        box.dispatchEvent(new Event('input', { bubbles: true }));
    })()""")
    found = await page.wait_for(
        "document.querySelector('[data-role=\"search:results\"]')?.innerText"
    )
    assert "Deposit funds: charge the card on file and credit the balance" in found

    assert_nothing_from_elsewhere(page, service.url)
