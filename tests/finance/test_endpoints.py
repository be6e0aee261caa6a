"""Finance settings, the balance, deposits and the ledger (SPEC §5, §6)."""

import httpx
import pytest

from tests.conftest import AddUser, SignUp
from tests.money import (
    CHARGES_DECLINED,
    TIMEOUT_NOT_CHARGED,
    TIMEOUT_SUCCEEDED,
    add_card,
    balance,
    deposit,
    ledger,
    settings,
)
from tests.problems import assert_problem, error_fields


async def test_new_account_settings(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    response = await client.get("/v1/finance/settings", headers=admin.headers)
    assert response.status_code == 200
    assert response.json() == {
        "balance_payments_enabled": False,
        "card_payments_enabled": True,
        "default_payment_method": "card",
        "low_balance_threshold": None,
        "currency": "USD",
        "notification_emails": [admin.email],
        "auto_top_up": None,
    }


async def test_enable_balance_and_make_it_default(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    body = await settings(
        client,
        admin,
        balance_payments_enabled=True,
        default_payment_method="balance",
        low_balance_threshold="100.00",
        notification_emails=["ops@example.com", "cfo@example.com"],
    )
    assert body["default_payment_method"] == "balance"
    assert body["low_balance_threshold"] == "100.00"
    assert body["notification_emails"] == ["ops@example.com", "cfo@example.com"]
    got = await client.get("/v1/finance/settings", headers=admin.headers)
    assert got.json() == body


@pytest.mark.parametrize(
    "changes",
    [
        {"default_payment_method": "balance"},  # balance is not enabled
        {"card_payments_enabled": False, "balance_payments_enabled": True},  # card is the default
    ],
)
async def test_default_must_be_an_enabled_method(
    client: httpx.AsyncClient, sign_up: SignUp, changes: dict[str, object]
) -> None:
    admin = await sign_up()
    response = await client.patch("/v1/finance/settings", headers=admin.headers, json=changes)
    assert_problem(response, 422, "default_method_disabled")


async def test_turning_off_the_default_while_naming_a_new_one_is_fine(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    body = await settings(
        client,
        admin,
        card_payments_enabled=False,
        balance_payments_enabled=True,
        default_payment_method="balance",
    )
    assert (body["card_payments_enabled"], body["default_payment_method"]) == (False, "balance")


async def test_one_method_must_stay_enabled(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    response = await client.patch(
        "/v1/finance/settings",
        headers=admin.headers,
        json={"card_payments_enabled": False, "default_payment_method": None},
    )
    assert_problem(response, 422, "no_payment_method_enabled")


@pytest.mark.parametrize("threshold", ["-1.00", "1.234", "abc"])
async def test_bad_threshold_is_422(
    client: httpx.AsyncClient, sign_up: SignUp, threshold: str
) -> None:
    admin = await sign_up()
    response = await client.patch(
        "/v1/finance/settings", headers=admin.headers, json={"low_balance_threshold": threshold}
    )
    assert "body.low_balance_threshold" in error_fields(
        assert_problem(response, 422, "validation_error")
    )


async def test_zero_threshold_and_clearing_it(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    assert (await settings(client, admin, low_balance_threshold=0))[
        "low_balance_threshold"
    ] == "0.00"
    assert (await settings(client, admin, low_balance_threshold=None))[
        "low_balance_threshold"
    ] is None


async def test_balance_starts_at_zero_and_shows_the_threshold(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await settings(client, admin, low_balance_threshold="100.00")
    response = await client.get("/v1/finance/balance", headers=admin.headers)
    assert response.json() == {
        "balance": "0.00",
        "currency": "USD",
        "low_balance_threshold": "100.00",
        "below_threshold": True,
    }


async def test_deposit_credits_the_balance_and_the_ledger(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    response = await deposit(client, admin, "500.00")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["id"].startswith("dep_")
    assert (body["amount"], body["currency"], body["status"], body["balance_after"]) == (
        "500.00",
        "USD",
        "succeeded",
        "500.00",
    )
    second = await client.post(
        "/v1/finance/deposits",
        headers={**admin.headers, "Idempotency-Key": "second"},
        json={"amount": 12.5},
    )
    assert second.json()["balance_after"] == "512.50"
    assert await balance(client, admin) == "512.50"
    entries = await ledger(client, admin)
    assert [(e["type"], e["amount"], e["balance_after"]) for e in entries] == [
        ("deposit", "12.50", "512.50"),
        ("deposit", "500.00", "500.00"),
    ]
    assert entries[1]["deposit_id"] == body["id"]
    assert entries[1]["order_id"] is None
    assert entries[0]["id"].startswith("txn_")
    listed = await client.get("/v1/finance/deposits", headers=admin.headers)
    assert [d["id"] for d in listed.json()["data"]] == [second.json()["id"], body["id"]]
    one = await client.get(f"/v1/finance/deposits/{body['id']}", headers=admin.headers)
    assert one.json() == body


async def test_deposit_without_idempotency_key_is_400(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    response = await client.post(
        "/v1/finance/deposits", headers=admin.headers, json={"amount": "50.00"}
    )
    assert_problem(response, 400, "idempotency_key_required")
    assert await balance(client, admin) == "0.00"


async def test_deposit_without_card_is_409(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    assert_problem(await deposit(client, admin, "50.00"), 409, "no_card_on_file")


@pytest.mark.parametrize("amount", ["9.99", "100000.01"])
async def test_deposit_out_of_range_is_422(
    client: httpx.AsyncClient, sign_up: SignUp, amount: str
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    assert_problem(await deposit(client, admin, amount), 422, "amount_out_of_range")


@pytest.mark.parametrize("amount", ["10.001", "0", "-5.00", "NaN", "Infinity", "1e400", "ten"])
async def test_malformed_amount_is_422_validation_error(
    client: httpx.AsyncClient, sign_up: SignUp, amount: str
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    response = await deposit(client, admin, amount)
    assert "body.amount" in error_fields(assert_problem(response, 422, "validation_error"))


async def test_range_edges_are_accepted(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    assert (await deposit(client, admin, "10.00")).status_code == 201
    assert (await deposit(client, admin, "100000.00")).status_code == 201
    assert await balance(client, admin) == "100010.00"


async def test_declined_deposit_is_402_and_kept_as_failed(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin, CHARGES_DECLINED)
    body = assert_problem(await deposit(client, admin, "50.00"), 402, "card_declined")
    assert body["decline_code"]
    failed = await client.get(f"/v1/finance/deposits/{body['deposit_id']}", headers=admin.headers)
    assert failed.json()["status"] == "failed"
    assert failed.json()["failure_code"] == "card_declined"
    assert failed.json()["balance_after"] is None
    assert await balance(client, admin) == "0.00"
    assert await ledger(client, admin) == []


@pytest.mark.parametrize("number", [TIMEOUT_SUCCEEDED, TIMEOUT_NOT_CHARGED])
async def test_unknown_outcome_is_202_pending_and_nothing_credited(
    client: httpx.AsyncClient, sign_up: SignUp, number: str
) -> None:
    admin = await sign_up()
    await add_card(client, admin, number)
    response = await deposit(client, admin, "50.00")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"
    assert response.json()["balance_after"] is None
    assert await balance(client, admin) == "0.00"


async def test_deposits_are_allowed_with_balance_payments_off(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    assert (await deposit(client, admin, "25.00")).status_code == 201


async def test_another_accounts_deposit_is_404(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    owner, stranger = await sign_up(), await sign_up()
    await add_card(client, owner)
    made = (await deposit(client, owner, "25.00")).json()
    response = await client.get(f"/v1/finance/deposits/{made['id']}", headers=stranger.headers)
    assert_problem(response, 404, "not_found")


async def test_roles_for_finance_endpoints(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    finance = await add_user(admin, "finance")
    user = await add_user(admin, "user")
    await add_card(client, admin)
    assert (await deposit(client, finance, "20.00")).status_code == 201
    assert (await client.get("/v1/finance/balance", headers=user.headers)).status_code == 200
    assert_problem(await deposit(client, user, "20.00"), 403, "forbidden")
    for path in ("/v1/finance/settings", "/v1/finance/deposits", "/v1/finance/transactions"):
        assert_problem(await client.get(path, headers=user.headers), 403, "forbidden")
        assert (await client.get(path, headers=finance.headers)).status_code == 200
    assert_problem(
        await client.patch("/v1/finance/settings", headers=user.headers, json={}), 403, "forbidden"
    )
