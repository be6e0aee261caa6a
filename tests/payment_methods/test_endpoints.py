"""The card on file (SPEC §4): verified by the gateway before it replaces the old card."""

import httpx
import pytest

from tests.conftest import AddUser, SignUp
from tests.money import (
    AMEX,
    DECLINED,
    EXPIRED,
    INSUFFICIENT,
    MASTERCARD,
    PROCESSING_ERROR,
    VISA,
    add_card,
    card_body,
    settings,
)
from tests.problems import assert_problem


async def test_no_card_is_404_no_card_on_file(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    assert_problem(
        await client.get("/v1/account/card", headers=admin.headers), 404, "no_card_on_file"
    )


@pytest.mark.parametrize(
    ("number", "brand"), [(VISA, "visa"), (MASTERCARD, "mastercard"), (AMEX, "amex")]
)
async def test_put_card_keeps_only_brand_last4_expiry_and_holder(
    client: httpx.AsyncClient, sign_up: SignUp, number: str, brand: str
) -> None:
    admin = await sign_up()
    response = await client.put("/v1/account/card", headers=admin.headers, json=card_body(number))
    assert response.status_code == 200, response.text
    card = response.json()
    assert card["brand"] == brand
    assert card["last4"] == number[-4:]
    assert (card["exp_month"], card["exp_year"], card["holder_name"]) == (12, 2031, "Ada Lovelace")
    assert number not in response.text
    assert (await client.get("/v1/account/card", headers=admin.headers)).json() == card


async def test_card_number_with_spaces_is_accepted(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.put(
        "/v1/account/card", headers=admin.headers, json=card_body("4242 4242 4242 4242")
    )
    assert response.status_code == 200
    assert response.json()["last4"] == "4242"


@pytest.mark.parametrize(
    "number", ["4242424242424241", "1234", "42424242424242424242", "4242abcd42424242"]
)
async def test_invalid_number_is_422_invalid_card_number(
    client: httpx.AsyncClient, sign_up: SignUp, number: str
) -> None:
    admin = await sign_up()
    response = await client.put("/v1/account/card", headers=admin.headers, json=card_body(number))
    body = assert_problem(response, 422, "invalid_card_number")
    assert number not in response.text, body


async def test_expired_card_is_422_card_expired(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    response = await client.put(
        "/v1/account/card", headers=admin.headers, json=card_body(exp_month=1, exp_year=2020)
    )
    assert_problem(response, 422, "card_expired")


@pytest.mark.parametrize(
    ("number", "decline_code"),
    [
        (DECLINED, "generic_decline"),
        (INSUFFICIENT, "insufficient_funds"),
        (EXPIRED, "expired_card"),
    ],
)
async def test_declined_card_is_402_and_the_old_card_stays(
    client: httpx.AsyncClient, sign_up: SignUp, number: str, decline_code: str
) -> None:
    admin = await sign_up()
    await add_card(client, admin, VISA)
    response = await client.put("/v1/account/card", headers=admin.headers, json=card_body(number))
    body = assert_problem(response, 402, "card_declined")
    assert body["decline_code"] == decline_code
    assert (await client.get("/v1/account/card", headers=admin.headers)).json()["last4"] == "4242"


async def test_gateway_error_is_503_with_retry_after_and_nothing_changed(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin, MASTERCARD)
    response = await client.put(
        "/v1/account/card", headers=admin.headers, json=card_body(PROCESSING_ERROR)
    )
    assert_problem(response, 503, "gateway_unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert (await client.get("/v1/account/card", headers=admin.headers)).json()["last4"] == "4444"


async def test_card_from_a_client_side_token(
    client: httpx.AsyncClient, sign_up: SignUp, sandbox_url: str
) -> None:
    admin = await sign_up()
    async with httpx.AsyncClient(base_url=sandbox_url) as gateway:
        tokenised = await gateway.post("/v1/tokens", json=card_body(MASTERCARD))
    assert tokenised.status_code == 200, tokenised.text
    token = tokenised.json()["token"]
    response = await client.put(
        "/v1/account/card", headers=admin.headers, json={"token": token, "holder_name": "Ada"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["last4"] == "4444"
    assert response.json()["brand"] == "mastercard"


async def test_card_body_must_be_details_or_token(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    response = await client.put(
        "/v1/account/card", headers=admin.headers, json={**card_body(), "token": "tok_x"}
    )
    assert_problem(response, 422, "validation_error")


async def test_delete_card_when_default_is_409_card_is_default(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    assert_problem(
        await client.delete("/v1/account/card", headers=admin.headers), 409, "card_is_default"
    )
    await settings(client, admin, balance_payments_enabled=True, default_payment_method="balance")
    assert (await client.delete("/v1/account/card", headers=admin.headers)).status_code == 204
    assert_problem(
        await client.get("/v1/account/card", headers=admin.headers), 404, "no_card_on_file"
    )
    assert_problem(
        await client.delete("/v1/account/card", headers=admin.headers), 404, "no_card_on_file"
    )


async def test_only_admin_and_finance_manage_the_card(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    finance = await add_user(admin, "finance")
    user = await add_user(admin, "user")
    assert (
        await client.put("/v1/account/card", headers=finance.headers, json=card_body())
    ).status_code == 200
    assert (await client.get("/v1/account/card", headers=finance.headers)).status_code == 200
    assert_problem(await client.get("/v1/account/card", headers=user.headers), 403, "forbidden")
    assert_problem(
        await client.put("/v1/account/card", headers=user.headers, json=card_body()),
        403,
        "forbidden",
    )
    assert_problem(await client.delete("/v1/account/card", headers=user.headers), 403, "forbidden")
