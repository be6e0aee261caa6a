"""Webhook endpoints through HTTP (SPEC §12): admin only, another account's do not exist, at
most 16, the secret shown once and rotated with a 24-hour overlap, events listed for admin
and finance, redelivery on request, dead endpoints disabled and deselected types dropped."""

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from app.worker.runner import Worker
from tests.conftest import AddUser, SignUp, db_session
from tests.money import add_card, deposit
from tests.problems import assert_problem, error_fields
from tests.webhooks.conftest import add_endpoint, make_webhook_worker, path
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_delivery import deliver_until
from tests.webhooks.test_urls import deliveries


async def test_an_endpoint_is_created_listed_changed_and_deleted_and_never_shows_its_secret(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    created = await add_endpoint(
        client, admin, "https://hooks.partner.invalid/a", ["order.paid"], description="ERP"
    )
    assert set(created) == {"id", "url", "events", "description", "status", "secret", "created_at"}
    assert created["id"].startswith("whk_")
    assert (created["events"], created["description"], created["status"]) == (
        ["order.paid"],
        "ERP",
        "enabled",
    )
    shown = await client.get(f"/v1/webhook-endpoints/{created['id']}", headers=admin.headers)
    assert "secret" not in shown.json()
    listed = await client.get("/v1/webhook-endpoints", headers=admin.headers)
    assert [e["id"] for e in listed.json()["data"]] == [created["id"]]
    assert "secret" not in listed.json()["data"][0]
    assert listed.json()["has_more"] is False

    patched = await client.patch(
        f"/v1/webhook-endpoints/{created['id']}",
        headers=admin.headers,
        json={
            "events": ["order.paid", "order.canceled"],
            "status": "disabled",
            "description": None,
        },
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["events"], patched.json()["status"], patched.json()["description"]) == (
        ["order.paid", "order.canceled"],
        "disabled",
        None,
    )
    deleted = await client.delete(f"/v1/webhook-endpoints/{created['id']}", headers=admin.headers)
    assert deleted.status_code == 204
    gone = await client.get(f"/v1/webhook-endpoints/{created['id']}", headers=admin.headers)
    assert_problem(gone, 404, "not_found")


async def test_events_must_be_a_non_empty_list_of_known_types(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    for events in ([], ["order.paid", "order.shipped"], "order.paid", None, [{}], [["x"]], [1]):
        response = await client.post(
            "/v1/webhook-endpoints",
            headers=admin.headers,
            json={"url": "https://hooks.partner.invalid/a", "events": events},
        )
        problem = assert_problem(response, 422, "validation_error")
        assert error_fields(problem) == {"body.events"}, events


async def test_an_account_has_at_most_16_endpoints(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await asyncio.gather(
        *(add_endpoint(client, admin, f"https://hooks.partner.invalid/{n}") for n in range(16))
    )
    response = await client.post(
        "/v1/webhook-endpoints",
        headers=admin.headers,
        json={"url": "https://hooks.partner.invalid/17", "events": ["order.paid"]},
    )
    assert_problem(response, 422, "too_many_webhook_endpoints")
    listed = await client.get("/v1/webhook-endpoints?limit=100", headers=admin.headers)
    assert len(listed.json()["data"]) == 16


async def test_endpoints_are_for_admins_and_events_for_admins_and_finance(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    endpoint = await add_endpoint(client, admin, "https://hooks.partner.invalid/a")
    finance, user = await add_user(admin, "finance"), await add_user(admin, "user")
    for member in (finance, user):
        for method, url in (
            ("GET", "/v1/webhook-endpoints"),
            ("POST", "/v1/webhook-endpoints"),
            ("GET", f"/v1/webhook-endpoints/{endpoint['id']}"),
            ("POST", f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret"),
            ("GET", f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"),
        ):
            response = await client.request(
                method,
                url,
                headers=member.headers,
                json={"url": "https://hooks.partner.invalid/b", "events": ["order.paid"]}
                if method == "POST"
                else None,
            )
            assert_problem(response, 403, "forbidden")
    assert (await client.get("/v1/events", headers=finance.headers)).status_code == 200
    assert_problem(await client.get("/v1/events", headers=user.headers), 403, "forbidden")


async def test_another_accounts_endpoints_and_events_do_not_exist(
    client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver, webhook_worker: Worker
) -> None:
    owner, stranger = await sign_up(), await sign_up()
    endpoint = await add_endpoint(client, owner, receiver.url(path()))
    await add_card(client, owner)
    assert (await deposit(client, owner, "50.00")).status_code == 201
    [event] = (await client.get("/v1/events", headers=owner.headers)).json()["data"]
    mine = await add_endpoint(client, stranger, "https://hooks.partner.invalid/a")

    base = f"/v1/webhook-endpoints/{endpoint['id']}"
    for method, url, body in (
        ("GET", base, None),
        ("PATCH", base, {"description": "mine now"}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", None),
        ("GET", f"{base}/deliveries", None),
        ("POST", f"{base}/resend", {"event_id": event["id"]}),
        ("GET", f"/v1/events/{event['id']}", None),
        ("POST", f"/v1/webhook-endpoints/{mine['id']}/resend", {"event_id": event["id"]}),
    ):
        response = await client.request(method, url, headers=stranger.headers, json=body)
        assert_problem(response, 404, "not_found")
    assert (await client.get("/v1/events", headers=stranger.headers)).json()["data"] == []
    assert (await client.get(base, headers=owner.headers)).json()["description"] is None


async def test_during_a_rotation_both_secrets_verify_then_only_the_new_one(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    receiver: Receiver,
    webhook_worker: Worker,
) -> None:
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook), ["deposit.succeeded"])
    old = endpoint["secret"]
    rotated = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret", headers=admin.headers
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new.startswith("whsec_")
    assert new != old
    assert rotated.json()["previous_secret_expires_at"] > endpoint["created_at"]

    await add_card(client, admin)
    assert (await deposit(client, admin, "50.00")).status_code == 201
    await deliver_until(webhook_worker, lambda: len(receiver.to(hook)) == 1)
    [during] = receiver.to(hook)
    assert during.verified_by(old)
    assert during.verified_by(new)
    assert len(during.headers["webhook-signature"].split(" ")) == 2

    # The 24 hours are over.
    async with db_session(app) as session:
        await session.execute(
            text(
                "UPDATE webhook_endpoint SET previous_secret_expires_at = now() - interval '1 s'"
                " WHERE id = :id"
            ),
            {"id": endpoint["id"]},
        )
    assert (await deposit(client, admin, "50.00")).status_code == 201
    await deliver_until(webhook_worker, lambda: len(receiver.to(hook)) == 2)
    after = receiver.to(hook)[1]
    assert after.verified_by(new)
    assert not after.verified_by(old)


async def test_an_event_is_resent_on_request_under_its_id(
    client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver, webhook_worker: Worker
) -> None:
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook), ["deposit.succeeded"])
    await add_card(client, admin)
    assert (await deposit(client, admin, "50.00")).status_code == 201
    await deliver_until(webhook_worker, lambda: len(receiver.to(hook)) == 1)

    event_id = receiver.to(hook)[0].webhook_id
    resent = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/resend",
        headers=admin.headers,
        json={"event_id": event_id},
    )
    assert resent.status_code == 202, resent.text
    assert (resent.json()["attempt"], resent.json()["status"]) == (2, "pending")
    await deliver_until(webhook_worker, lambda: len(receiver.to(hook)) == 2)
    assert [r.webhook_id for r in receiver.to(hook)] == [event_id, event_id]
    rows = await deliveries(client, admin, endpoint["id"])
    assert [(d["attempt"], d["status"]) for d in rows] == [(2, "succeeded"), (1, "succeeded")]

    metrics = (await client.get("/metrics")).text
    assert 'webhook_deliveries_total{outcome="succeeded"}' in metrics
    assert "webhook_queue_age_seconds" in metrics

    narrowed = await client.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}",
        headers=admin.headers,
        json={"events": ["order.paid"]},
    )
    assert narrowed.status_code == 200
    unsubscribed = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/resend",
        headers=admin.headers,
        json={"event_id": event_id},
    )
    assert_problem(unsubscribed, 409, "webhook_event_not_subscribed")

    disabled = await client.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}",
        headers=admin.headers,
        json={"status": "disabled"},
    )
    assert disabled.status_code == 200
    refused = await client.post(
        f"/v1/webhook-endpoints/{endpoint['id']}/resend",
        headers=admin.headers,
        json={"event_id": event_id},
    )
    assert_problem(refused, 409, "webhook_endpoint_disabled")


async def test_an_endpoint_failing_for_the_whole_window_is_disabled(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver
) -> None:
    """Five days in production; one second here."""
    worker = make_webhook_worker(app, webhook_disable_after_seconds=1.0)
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook), ["deposit.succeeded"])
    receiver.answer(500, 500, 500, 500)
    try:
        await add_card(client, admin)
        assert (await deposit(client, admin, "50.00")).status_code == 201
        await deliver_until(worker, lambda: len(receiver.to(hook)) == 1)
        await asyncio.sleep(1.1)
        await deliver_until(worker, lambda: len(receiver.to(hook)) == 2)

        async def disabled() -> bool:
            await worker.deliver_due()
            shown = await client.get(
                f"/v1/webhook-endpoints/{endpoint['id']}", headers=admin.headers
            )
            return bool(shown.json()["status"] == "disabled")

        for _ in range(50):
            if await disabled():
                break
            await asyncio.sleep(0.05)
        assert await disabled()
        await asyncio.sleep(0.5)
        await worker.deliver_due()
        assert len(receiver.to(hook)) == 2  # nothing more is sent
        rows = await deliveries(client, admin, endpoint["id"])
        assert [(d["attempt"], d["status"]) for d in rows] == [(2, "failed"), (1, "failed")]
        assert rows[0]["next_attempt_at"] is None
    finally:
        await worker.webhooks.aclose()


async def test_a_type_deselected_while_failing_is_not_retried(
    client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver, webhook_worker: Worker
) -> None:
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook), ["deposit.succeeded"])
    receiver.answer(500)
    await add_card(client, admin)
    assert (await deposit(client, admin, "50.00")).status_code == 201
    await deliver_until(webhook_worker, lambda: len(receiver.to(hook)) == 1)

    patched = await client.patch(
        f"/v1/webhook-endpoints/{endpoint['id']}",
        headers=admin.headers,
        json={"events": ["order.paid"]},
    )
    assert patched.status_code == 200
    await asyncio.sleep(0.3)  # past the retry's time
    for _ in range(5):
        await webhook_worker.deliver_due()
    assert len(receiver.to(hook)) == 1
    rows = await deliveries(client, admin, endpoint["id"])
    assert [(d["attempt"], d["status"], d["error"]) for d in rows] == [
        (2, "failed", "not_subscribed"),
        (1, "failed", None),
    ]


async def test_a_resend_while_a_retry_waits_sends_that_retry_now(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, receiver: Receiver
) -> None:
    """Not a second waiting attempt: the waiting one, due now instead of on its schedule."""
    worker = make_webhook_worker(app, webhook_retry_schedule=[3600.0])
    admin = await sign_up()
    hook = path()
    endpoint = await add_endpoint(client, admin, receiver.url(hook), ["deposit.succeeded"])
    receiver.answer(500)
    try:
        await add_card(client, admin)
        assert (await deposit(client, admin, "50.00")).status_code == 201
        await deliver_until(worker, lambda: len(receiver.to(hook)) == 1)
        event_id = receiver.to(hook)[0].webhook_id
        [waiting, _first] = await deliveries(client, admin, endpoint["id"])
        assert (waiting["attempt"], waiting["status"]) == (2, "pending")

        resent = await client.post(
            f"/v1/webhook-endpoints/{endpoint['id']}/resend",
            headers=admin.headers,
            json={"event_id": event_id},
        )
        assert resent.status_code == 202, resent.text
        assert (resent.json()["id"], resent.json()["attempt"]) == (waiting["id"], 2)
        await deliver_until(worker, lambda: len(receiver.to(hook)) == 2)  # not in an hour
        rows = await deliveries(client, admin, endpoint["id"])
        assert [(d["attempt"], d["status"]) for d in rows] == [(2, "succeeded"), (1, "failed")]
    finally:
        await worker.webhooks.aclose()
