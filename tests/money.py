"""Steps of the money flows, through the public API, shared by the money tests."""

import secrets
from typing import Any

import httpx

from tests.conftest import Member

VISA = "4242424242424242"
MASTERCARD = "5555555555554444"
AMEX = "378282246310005"
DECLINED = "4000000000000002"
INSUFFICIENT = "4000000000009995"
EXPIRED = "4000000000000069"
PROCESSING_ERROR = "4000000000000119"
CHARGES_DECLINED = "4000000000000341"
TIMEOUT_SUCCEEDED = "4000000000007775"
TIMEOUT_NOT_CHARGED = "4000000000008880"


def card_body(number: str = VISA, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "number": number,
        "exp_month": 12,
        "exp_year": 2031,
        "cvc": "123",
        "holder_name": "Ada Lovelace",
    }
    body.update(overrides)
    return body


def key() -> str:
    return f"test-{secrets.token_hex(8)}"


async def add_card(client: httpx.AsyncClient, member: Member, number: str = VISA) -> None:
    response = await client.put("/v1/account/card", headers=member.headers, json=card_body(number))
    assert response.status_code == 200, response.text


async def deposit(
    client: httpx.AsyncClient, member: Member, amount: str, idempotency_key: str | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/finance/deposits",
        headers={**member.headers, "Idempotency-Key": idempotency_key or key()},
        json={"amount": amount},
    )


async def fund(client: httpx.AsyncClient, member: Member, amount: str) -> None:
    """Card on file, balance payments on and preselected, and `amount` deposited."""
    await add_card(client, member)
    response = await deposit(client, member, amount)
    assert response.status_code == 201, response.text
    await settings(client, member, balance_payments_enabled=True, default_payment_method="balance")


async def settings(client: httpx.AsyncClient, member: Member, **changes: Any) -> dict[str, Any]:
    response = await client.patch("/v1/finance/settings", headers=member.headers, json=changes)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def order(
    client: httpx.AsyncClient,
    member: Member | dict[str, str],
    idempotency_key: str | None = None,
    **fields: Any,
) -> httpx.Response:
    headers = member.headers if isinstance(member, Member) else member
    body: dict[str, Any] = {
        "product_id": "ssl_dv",
        "common_name": "www.example.com",
        "validity_years": 1,
    }
    body.update(fields)
    return await client.post(
        "/v1/orders", headers={**headers, "Idempotency-Key": idempotency_key or key()}, json=body
    )


async def balance(client: httpx.AsyncClient, member: Member) -> str:
    response = await client.get("/v1/finance/balance", headers=member.headers)
    assert response.status_code == 200, response.text
    value: str = response.json()["balance"]
    return value


async def ledger(client: httpx.AsyncClient, member: Member) -> list[dict[str, Any]]:
    response = await client.get("/v1/finance/transactions?limit=100", headers=member.headers)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries
