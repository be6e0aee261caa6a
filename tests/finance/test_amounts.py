"""SPEC §1 amounts as a client sends them: ASCII digits with an optional point and one or two
decimals, or a JSON number with at most two decimals. Every other form is 422
validation_error on the member itself, and nothing is charged or changed."""

import json

import httpx
import pytest

from tests.conftest import Member, SignUp
from tests.money import add_card, key
from tests.problems import assert_problem, error_fields

BAD_AMOUNTS = [
    '"1e3"',
    '"1E3"',
    '"+50.00"',
    '"-50.00"',
    '"1_000.00"',
    '"1,000.00"',
    '" 50.00"',
    '"50.00 "',
    '"\\uff15\\uff10.\\uff10\\uff10"',  # fullwidth 50.00
    '"\\u0665\\u0660.\\u0660\\u0660"',  # Arabic-Indic 50.00
    '"50."',
    '".50"',
    '"50.001"',
    "50.001",
    '"0"',
    "0",
    '"NaN"',
    '"Infinity"',
    '"0x32"',
    '"99999999999999999999.00"',
    "1e400",
    "true",
    "null",
    "[50]",
    '""',
]


async def deposit_raw(client: httpx.AsyncClient, admin: Member, amount: str) -> httpx.Response:
    """A deposit whose amount is the JSON text given, as a client would write it."""
    await add_card(client, admin)
    return await client.post(
        "/v1/finance/deposits",
        headers={**admin.headers, "Idempotency-Key": key(), "Content-Type": "application/json"},
        content=f'{{"amount": {amount}}}'.encode(),
    )


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
async def test_a_deposit_of_a_malformed_amount_is_422_and_charges_nothing(
    client: httpx.AsyncClient, sign_up: SignUp, amount: str
) -> None:
    admin = await sign_up()
    response = await deposit_raw(client, admin, amount)
    problem = assert_problem(response, 422, "validation_error")
    assert error_fields(problem) == {"body.amount"}
    deposits = await client.get("/v1/finance/deposits", headers=admin.headers)
    assert deposits.json()["data"] == []


@pytest.mark.parametrize(
    ("amount", "credited"),
    [('"500"', "500.00"), ('"500.5"', "500.50"), ('"500.50"', "500.50"), ("12.5", "12.50"),
     ("1000", "1000.00")],
)  # fmt: skip
async def test_a_deposit_of_a_well_formed_amount_is_credited_exactly(
    client: httpx.AsyncClient, sign_up: SignUp, amount: str, credited: str
) -> None:
    admin = await sign_up()
    response = await deposit_raw(client, admin, amount)
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == credited
    balance = await client.get("/v1/finance/balance", headers=admin.headers)
    assert balance.json()["balance"] == credited


@pytest.mark.parametrize("amount", ['"1e3"', '" 5.00"', '"5."', '"+5"', '"\\u0665"'])
async def test_a_threshold_in_a_malformed_form_is_422_and_leaves_the_settings(
    client: httpx.AsyncClient, sign_up: SignUp, amount: str
) -> None:
    admin = await sign_up()
    before = (await client.get("/v1/finance/settings", headers=admin.headers)).json()
    response = await client.patch(
        "/v1/finance/settings",
        headers={**admin.headers, "Content-Type": "application/json"},
        content=json.dumps({"low_balance_threshold": json.loads(amount)}).encode(),
    )
    problem = assert_problem(response, 422, "validation_error")
    assert error_fields(problem) == {"body.low_balance_threshold"}
    after = (await client.get("/v1/finance/settings", headers=admin.headers)).json()
    assert after == before
