"""Products and certificate orders (SPEC §7): price, payment methods, Key Vault, cancel."""

import dataclasses

import asyncpg
import httpx
import pytest

from app.orders import service as orders_service
from tests.conftest import PASSWORD, AddUser, Member, SignUp, login
from tests.money import (
    CHARGES_DECLINED,
    TIMEOUT_SUCCEEDED,
    add_card,
    balance,
    fund,
    ledger,
    order,
    settings,
)
from tests.problems import assert_problem, error_fields


async def api_key_headers(
    client: httpx.AsyncClient, admin: Member, integration: str | None
) -> dict[str, str]:
    response = await client.post(
        "/v1/api-keys",
        headers=admin.headers,
        json={"name": "connector", "role": "user", "integration": integration},
    )
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


async def test_products_catalogue(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    response = await client.get("/v1/products", headers=admin.headers)
    assert response.status_code == 200
    assert response.json()["has_more"] is False
    products = {p["id"]: p for p in response.json()["data"]}
    assert {"ssl_dv", "ssl_ov", "ssl_ev", "ssl_dv_wildcard"} <= set(products)
    assert products["ssl_dv"] == {
        "id": "ssl_dv",
        "name": "Standard SSL (DV)",
        "validation": "dv",
        "wildcard": False,
        "price_per_year": "49.00",
        "price_per_extra_san": "25.00",
        "currency": "USD",
    }
    assert products["ssl_dv_wildcard"]["wildcard"] is True


async def test_order_amount_follows_the_formula_and_debits_the_balance(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "1000.00")
    response = await order(
        client,
        admin,
        product_id="ssl_ov",
        common_name="shop.example.com",
        sans=["api.example.com", "cdn.example.com"],
        validity_years=3,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    # 3 years * (150.00 + 2 SANs * 50.00)
    assert body["amount"] == "750.00"
    assert (body["status"], body["payment_method"], body["currency"]) == ("paid", "balance", "USD")
    assert body["id"].startswith("ord_")
    assert body["sans"] == ["api.example.com", "cdn.example.com"]
    assert await balance(client, admin) == "250.00"
    entry = (await ledger(client, admin))[0]
    assert (entry["type"], entry["amount"], entry["balance_after"], entry["order_id"]) == (
        "order",
        "-750.00",
        "250.00",
        body["id"],
    )
    assert (await client.get(f"/v1/orders/{body['id']}", headers=admin.headers)).json() == body
    listed = await client.get("/v1/orders", headers=admin.headers)
    assert [o["id"] for o in listed.json()["data"]] == [body["id"]]


async def test_no_method_uses_the_default(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    response = await order(client, admin)  # a new account preselects the card
    assert response.status_code == 201, response.text
    assert response.json()["payment_method"] == "card"
    assert response.json()["status"] == "paid"
    assert await balance(client, admin) == "0.00"


async def test_any_enabled_method_may_be_named(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")  # balance is now the default; the card is still enabled
    response = await order(client, admin, payment_method="card")
    assert response.status_code == 201
    assert response.json()["payment_method"] == "card"
    assert await balance(client, admin) == "100.00"


async def test_no_method_and_no_default_is_422(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await settings(client, admin, default_payment_method=None)
    assert_problem(await order(client, admin), 422, "payment_method_required")


async def test_method_not_enabled_is_422(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    assert_problem(
        await order(client, admin, payment_method="balance"), 422, "payment_method_disabled"
    )


async def test_balance_too_low_is_402_and_nothing_debited(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "40.00")
    assert_problem(await order(client, admin), 402, "insufficient_funds")
    assert await balance(client, admin) == "40.00"
    assert len(await ledger(client, admin)) == 1
    assert (await client.get("/v1/orders", headers=admin.headers)).json()["data"] == []


async def test_card_declined_is_402(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await add_card(client, admin, CHARGES_DECLINED)
    body = assert_problem(await order(client, admin), 402, "card_declined")
    assert body["decline_code"]
    failed = await client.get(f"/v1/orders/{body['order_id']}", headers=admin.headers)
    assert failed.json()["status"] == "failed"


async def test_card_without_card_on_file_is_409(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    assert_problem(await order(client, admin), 409, "no_card_on_file")


async def test_card_charge_outcome_unknown_is_202_pending_payment(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin, TIMEOUT_SUCCEEDED)
    response = await order(client, admin)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending_payment"
    cancel = await client.post(f"/v1/orders/{response.json()['id']}/cancel", headers=admin.headers)
    assert_problem(cancel, 409, "order_not_cancelable")


@pytest.mark.parametrize("method", ["card", None])
async def test_key_vault_may_not_pay_by_card(
    client: httpx.AsyncClient, sign_up: SignUp, method: str | None
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    await settings(client, admin, balance_payments_enabled=True)  # the default stays card
    key_vault = await api_key_headers(client, admin, "azure_key_vault")
    fields = {"payment_method": method} if method else {}
    assert_problem(await order(client, key_vault, **fields), 403, "payment_method_not_allowed")


async def test_key_vault_pays_from_the_balance(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    key_vault = await api_key_headers(client, admin, "azure_key_vault")
    response = await order(client, key_vault)
    assert response.status_code == 201, response.text
    assert response.json()["payment_method"] == "balance"
    assert await balance(client, admin) == "51.00"


async def test_plain_api_key_may_pay_by_card(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    plain = await api_key_headers(client, admin, None)
    assert (await order(client, plain)).status_code == 201


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"common_name": "not a host"}, "body.common_name"),
        ({"common_name": "localhost"}, "body.common_name"),
        ({"common_name": "-bad.example.com"}, "body.common_name"),
        ({"common_name": "*.example.com"}, "body.common_name"),
        ({"sans": ["*.example.com"]}, "body.sans.0"),
        ({"sans": ["a.example.com", "a.example.com"]}, "body.sans"),
        ({"sans": ["www.example.com"]}, "body.sans"),
        ({"sans": [f"h{i}.example.com" for i in range(251)]}, "body.sans"),
        ({"validity_years": 4}, "body.validity_years"),
        ({"product_id": "ssl_nope"}, "body.product_id"),
    ],
)
async def test_invalid_order_is_422_validation_error(
    client: httpx.AsyncClient, sign_up: SignUp, fields: dict[str, object], field: str
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    body = assert_problem(await order(client, admin, **fields), 422, "validation_error")
    assert field in error_fields(body)
    assert await balance(client, admin) == "100.00"


async def test_wildcard_product_takes_a_wildcard_name(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "500.00")
    response = await order(
        client,
        admin,
        product_id="ssl_dv_wildcard",
        common_name="*.Example.COM",
        sans=["example.com"],
    )
    assert response.status_code == 201, response.text
    assert response.json()["common_name"] == "*.example.com"
    assert response.json()["amount"] == "224.00"


async def test_250_sans_are_accepted(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await fund(client, admin, "10000.00")
    sans = [f"h{i}.example.com" for i in range(250)]
    response = await order(client, admin, sans=sans)
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == "6299.00"


async def test_cancel_a_balance_order_refunds_once(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    placed = (await order(client, admin)).json()
    first = await client.post(f"/v1/orders/{placed['id']}/cancel", headers=admin.headers)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "canceled"
    assert first.json()["canceled_at"]
    second = await client.post(f"/v1/orders/{placed['id']}/cancel", headers=admin.headers)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert await balance(client, admin) == "100.00"
    types = [e["type"] for e in await ledger(client, admin)]
    assert types == ["refund", "order", "deposit"]


async def test_cancel_a_card_order_refunds_through_the_gateway(
    client: httpx.AsyncClient, sign_up: SignUp, sandbox_url: str
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    placed = (await order(client, admin)).json()
    canceled = await client.post(f"/v1/orders/{placed['id']}/cancel", headers=admin.headers)
    assert canceled.json()["status"] == "canceled"
    again = await client.post(f"/v1/orders/{placed['id']}/cancel", headers=admin.headers)
    assert again.json()["status"] == "canceled"
    assert await ledger(client, admin) == []  # the balance never moved
    async with httpx.AsyncClient(base_url=sandbox_url) as gateway:
        charge = await gateway.get(
            "/v1/charges", params={"idempotency_key": f"order:{placed['id']}:charge"}
        )
    assert charge.status_code == 200, charge.text
    assert charge.json()["amount_cents"] == 4900
    assert charge.json()["refunded_cents"] == 4900  # refunded once, not twice


async def test_another_accounts_order_is_404(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    owner, stranger = await sign_up(), await sign_up()
    await fund(client, owner, "100.00")
    placed = (await order(client, owner)).json()
    assert_problem(
        await client.get(f"/v1/orders/{placed['id']}", headers=stranger.headers), 404, "not_found"
    )
    cancel = await client.post(f"/v1/orders/{placed['id']}/cancel", headers=stranger.headers)
    assert_problem(cancel, 404, "not_found")
    assert await balance(client, owner) == "51.00"


async def test_every_role_may_order(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    await fund(client, admin, "200.00")
    for role in ("finance", "user"):
        member = await add_user(admin, role)
        assert (await order(client, member)).status_code == 201
        assert (await client.get("/v1/orders", headers=member.headers)).status_code == 200
        assert (await client.get("/v1/products", headers=member.headers)).status_code == 200


# Who is calling is checked by the order's own statement (one round trip): a caller it
# refuses has nothing placed, debited or kept under the key, and is told 401 before anything
# else about the request.


async def test_an_order_by_a_revoked_key_is_401_and_moves_nothing(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    connector = await api_key_headers(client, admin, None)
    [made] = (await client.get("/v1/api-keys", headers=admin.headers)).json()["data"]
    revoked = await client.delete(f"/v1/api-keys/{made['id']}", headers=admin.headers)
    assert revoked.status_code in (200, 204), revoked.text
    assert_problem(await order(client, connector, "revoked-then-reused"), 401, "unauthenticated")
    # Every other fault of the request is hidden behind the 401 too.
    no_key = await client.post(
        "/v1/orders",
        headers=connector,
        json={"product_id": "ssl_dv", "common_name": "www.example.com", "validity_years": 1},
    )
    assert_problem(no_key, 401, "unauthenticated")
    for faults in ({"product_id": "no_such_product"}, {"validity_years": 9}):
        answer = await order(client, connector, "revoked-then-reused", **faults)
        assert_problem(answer, 401, "unauthenticated")
    assert await balance(client, admin) == "100.00"
    assert (await client.get("/v1/orders", headers=admin.headers)).json()["data"] == []
    # The key was never the refused caller's: the account's own admin may use it.
    placed = await order(client, admin, "revoked-then-reused")
    assert placed.status_code == 201, placed.text
    assert await balance(client, admin) == "51.00"


async def test_an_order_with_a_token_from_before_a_password_change_is_401(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    changed = await client.put(
        "/v1/account/password",
        headers=admin.headers,
        json={
            "current_password": PASSWORD,
            "new_password": "Another-Long-Password-2",
            "new_password_confirmation": "Another-Long-Password-2",
        },
    )
    assert changed.status_code == 204, changed.text
    assert_problem(await order(client, admin, "stale-token"), 401, "unauthenticated")
    balance_read = await client.get("/v1/finance/balance", headers=admin.headers)
    assert_problem(balance_read, 401, "unauthenticated")
    token = await login(client, admin.email, "Another-Long-Password-2")
    fresh = dataclasses.replace(admin, token=token)
    assert await balance(client, fresh) == "100.00"
    assert (await client.get("/v1/orders", headers=fresh.headers)).json()["data"] == []


@pytest.mark.parametrize("catalogue", ["cached", "read again"])
async def test_a_retry_after_its_key_was_pruned_answers_the_order_it_made(
    client: httpx.AsyncClient,
    sign_up: SignUp,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    catalogue: str,
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    first = await order(client, admin, "kept-longer-than-its-key")
    assert first.status_code == 201, first.text
    # The worker prunes keys after a day (app.worker.runner); the order stays.
    db = await asyncpg.connect(database_url)
    try:
        await db.execute("DELETE FROM idempotency_key WHERE key = 'kept-longer-than-its-key'")
    finally:
        await db.close()
    if catalogue == "read again":  # as once every few minutes: the order's first read
        monkeypatch.setattr(orders_service, "_catalogue", (float("-inf"), {}))
    again = await order(client, admin, "kept-longer-than-its-key")
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert await balance(client, admin) == "51.00"
    assert [
        o["id"] for o in (await client.get("/v1/orders", headers=admin.headers)).json()["data"]
    ] == [first.json()["id"]]
