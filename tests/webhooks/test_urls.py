"""The URL rules (SPEC §12): https:// only, and never this machine or a private network, at
creation and again at each delivery (a name may come to resolve elsewhere), connecting to the
address that was checked, and no redirect followed."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.webhooks.delivery import WebhookSender
from app.webhooks.urls import UrlGuard, UrlRefused, is_refused_address
from app.worker.runner import Worker
from tests.conftest import Member, SignUp
from tests.money import add_card, deposit
from tests.problems import assert_problem
from tests.webhooks.conftest import add_endpoint, make_webhook_worker, path
from tests.webhooks.receiver import Answer, Receiver
from tests.webhooks.test_delivery import deliver_until

REFUSED_HOSTS = [
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.1",
    "192.168.1.10",
    "127.0.0.1",
    "127.1.2.3",
    "[::1]",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "[::]",
    "[::ffff:10.0.0.1]",
    "[::ffff:127.0.0.1]",
    "[fe80::1]",
    "[fc00::1]",
    "224.0.0.1",
    "2130706433",  # 127.0.0.1 written as one number
    "localhost",  # a name that resolves to loopback
]


@pytest.fixture
def strict(app: FastAPI) -> Iterator[None]:
    """The API with no WEBHOOK_ALLOWED_HOSTS, as in production."""
    previous = app.state.webhook_guard
    app.state.webhook_guard = UrlGuard(frozenset())
    yield
    app.state.webhook_guard = previous


@pytest.mark.parametrize("host", REFUSED_HOSTS)
async def test_a_private_or_loopback_target_is_refused_at_creation(
    client: httpx.AsyncClient, sign_up: SignUp, strict: None, host: str
) -> None:
    admin = await sign_up()
    response = await client.post(
        "/v1/webhook-endpoints",
        headers=admin.headers,
        json={"url": f"https://{host}/hooks", "events": ["order.paid"]},
    )
    assert_problem(response, 422, "webhook_url_not_allowed")
    listed = await client.get("/v1/webhook-endpoints", headers=admin.headers)
    assert listed.json()["data"] == []


async def test_plain_http_is_refused_outside_the_allowed_hosts(
    client: httpx.AsyncClient, sign_up: SignUp, strict: None
) -> None:
    admin = await sign_up()
    for url in ("http://hooks.example.com/x", "ftp://hooks.example.com/x"):
        response = await client.post(
            "/v1/webhook-endpoints",
            headers=admin.headers,
            json={"url": url, "events": ["order.paid"]},
        )
        assert_problem(response, 422, "webhook_url_not_allowed")
    for url in ("not a url", "https://", "https://user:pw@hooks.example.com/", "/relative"):
        response = await client.post(
            "/v1/webhook-endpoints",
            headers=admin.headers,
            json={"url": url, "events": ["order.paid"]},
        )
        problem = assert_problem(response, 422, "validation_error")
        assert [e["field"] for e in problem["errors"]] == ["body.url"]


async def test_a_name_that_does_not_resolve_yet_is_accepted_and_checked_when_delivering(
    client: httpx.AsyncClient, sign_up: SignUp, strict: None
) -> None:
    admin = await sign_up()
    endpoint = await add_endpoint(client, admin, "https://hooks.partner.invalid/events")
    assert endpoint["url"] == "https://hooks.partner.invalid/events"
    assert endpoint["status"] == "enabled"


async def test_a_patch_to_a_private_url_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, sign_up: SignUp, strict: None
) -> None:
    admin = await sign_up()
    endpoint = await add_endpoint(client, admin, "https://hooks.partner.invalid/events")
    response = await client.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}",
        headers=admin.headers,
        json={"url": "https://192.168.0.1/events"},
    )
    assert_problem(response, 422, "webhook_url_not_allowed")
    shown = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=admin.headers)
    assert shown.json()["url"] == "https://hooks.partner.invalid/events"


def test_every_refused_form_of_an_address_is_refused_and_public_ones_pass() -> None:
    for address in ("10.1.2.3", "::ffff:192.168.0.1", "2002:c0a8:0001::1", "fd12::1", "::1"):
        assert is_refused_address(address), address
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
        assert not is_refused_address(address), address


async def test_a_delivery_connects_to_the_address_it_checked_with_the_name_for_tls() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.partner.example", 8443)
        return ["93.184.216.34"]

    target = await UrlGuard(frozenset(), resolver).target(
        "https://hooks.partner.example:8443/events?x=1"
    )
    assert str(target.url) == "https://93.184.216.34:8443/events?x=1"
    assert target.headers == {"Host": "hooks.partner.example:8443"}
    assert target.extensions == {"sni_hostname": "hooks.partner.example"}


async def test_a_name_resolving_to_a_private_address_at_delivery_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]  # one bad answer is enough

    with pytest.raises(UrlRefused):
        await UrlGuard(frozenset(), resolver).target("https://hooks.partner.example/events")


async def test_dns_rebinding_after_creation_sends_nothing(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver, strict: None
) -> None:
    """Created while the name did not resolve; by delivery time it points at this machine
    (where the receiver listens): the attempt fails as url_not_allowed, nothing is sent."""
    admin = await sign_up()
    endpoint = await add_endpoint(
        client,
        admin,
        f"https://rebound.partner.invalid:{receiver.port}/hooks",
        ["deposit.succeeded"],
    )

    async def rebound(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "rebound.partner.invalid" else []

    settings = app.state.settings
    sender = WebhookSender(settings, app.state.database, UrlGuard(frozenset(), rebound))
    worker: Worker = make_webhook_worker(app, sender)
    try:
        await add_card(client, admin)
        assert (await deposit(client, admin, "50.00")).status_code == 201

        async def attempted() -> bool:
            rows = await deliveries(client, admin, endpoint["id"])
            return any(d["status"] == "failed" for d in rows)

        for _ in range(100):
            await worker.deliver_due()
            if await attempted():
                break
        [*_, first] = await deliveries(client, admin, endpoint["id"])
        assert (first["status"], first["error"], first["response_status"]) == (
            "failed",
            "url_not_allowed",
            None,
        )
        assert receiver.received == []
    finally:
        await sender.aclose()


async def deliveries(
    client: httpx.AsyncClient, admin: Member, endpoint_id: str
) -> list[dict[str, Any]]:
    """The endpoint's attempts, newest first."""
    response = await client.get(
        f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=admin.headers
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()["data"]
    return rows


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver, webhook_worker: Worker
) -> None:
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook), ["deposit.succeeded"])
    receiver.answer(Answer(302, headers={"Location": receiver.url("/elsewhere")}))

    await add_card(client, admin)
    assert (await deposit(client, admin, "50.00")).status_code == 201
    await deliver_until(webhook_worker, lambda: len(receiver.to(hook)) == 2)  # the retry

    assert receiver.to("/elsewhere") == []
    rows = await deliveries(client, admin, endpoint["id"])
    assert (rows[-1]["attempt"], rows[-1]["status"], rows[-1]["response_status"]) == (
        1,
        "failed",
        302,
    )
    assert rows[-1]["error"] == "redirect_not_followed"
