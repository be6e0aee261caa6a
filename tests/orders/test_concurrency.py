"""Money under concurrency, through HTTP against the real app and its real (queue) pool.

Many requests race for one balance, one Idempotency-Key or one order. Whatever the
interleaving: nothing is debited twice, the balance never goes below zero, every race is
answered with a 2xx or a documented 4xx (never a 5xx), and afterwards the ledger and the
balance row agree, read through the API and straight from the database.
"""

import asyncio
import secrets
from collections import Counter
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Member, SignUp
from tests.problems import assert_problem

VISA = "4242424242424242"


def cents(amount: str) -> int:
    value = Decimal(amount) * 100
    assert value == value.to_integral_value(), amount
    return int(value)


def money(amount_cents: int) -> str:
    sign = "-" if amount_cents < 0 else ""
    whole, part = divmod(abs(amount_cents), 100)
    return f"{sign}{whole}.{part:02d}"


def new_key(tag: str = "conc") -> str:
    return f"{tag}-{secrets.token_hex(8)}"


def card_body(number: str = VISA) -> dict[str, Any]:
    return {
        "number": number,
        "exp_month": 12,
        "exp_year": 2031,
        "cvc": "123",
        "holder_name": "Ada Lovelace",
    }


def order_body(n: int = 0, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "product_id": "ssl_dv",
        "common_name": f"www{n}.example.com",
        "validity_years": 1,
    }
    body.update(fields)
    return body


async def add_card(client: httpx.AsyncClient, member: Member, number: str = VISA) -> None:
    response = await client.put("/v1/account/card", headers=member.headers, json=card_body(number))
    assert response.status_code == 200, response.text


async def deposit(client: httpx.AsyncClient, member: Member, amount_cents: int) -> dict[str, Any]:
    response = await client.post(
        "/v1/finance/deposits",
        headers={**member.headers, "Idempotency-Key": new_key("dep")},
        json={"amount": money(amount_cents)},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def enable_balance(client: httpx.AsyncClient, member: Member) -> None:
    response = await client.patch(
        "/v1/finance/settings",
        headers=member.headers,
        json={"balance_payments_enabled": True, "default_payment_method": "balance"},
    )
    assert response.status_code == 200, response.text


async def price_cents(client: httpx.AsyncClient, member: Member, product_id: str) -> int:
    response = await client.get("/v1/products", headers=member.headers)
    assert response.status_code == 200, response.text
    product = next(p for p in response.json()["data"] if p["id"] == product_id)
    return cents(product["price_per_year"])


async def fund(client: httpx.AsyncClient, member: Member, amount_cents: int) -> None:
    """A card on file, balance payments on and preselected, and amount_cents deposited."""
    await add_card(client, member)
    await enable_balance(client, member)
    if amount_cents:
        await deposit(client, member, amount_cents)


async def balance_cents(client: httpx.AsyncClient, member: Member) -> int:
    response = await client.get("/v1/finance/balance", headers=member.headers)
    assert response.status_code == 200, response.text
    return cents(response.json()["balance"])


async def all_pages(client: httpx.AsyncClient, member: Member, path: str) -> list[dict[str, Any]]:
    """Every item of a list endpoint, newest first, paged with limit=100 and starting_after."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        response = await client.get(path, headers=member.headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["data"])
        if not page["has_more"]:
            return items
        assert page["data"], "has_more with an empty page"
        params["starting_after"] = page["data"][-1]["id"]


async def assert_books_balance(
    client: httpx.AsyncClient, member: Member, database_url: str
) -> list[dict[str, Any]]:
    """The balance equals the sum of the ledger, the balance_after chain is continuous and
    never negative, and the database agrees (rows, sequence numbers, balance row). Returns the
    ledger, oldest first."""
    balance = await balance_cents(client, member)
    entries = list(reversed(await all_pages(client, member, "/v1/finance/transactions")))
    assert len({entry["id"] for entry in entries}) == len(entries), "an entry listed twice"
    running = 0
    for entry in entries:
        amount = cents(entry["amount"])
        assert amount != 0, entry
        running += amount
        assert cents(entry["balance_after"]) == running, entries
        assert running >= 0, entries
    assert balance == running

    db = await asyncpg.connect(database_url)
    try:
        rows = await db.fetch(
            "SELECT id, seq, amount_cents, balance_after_cents FROM ledger_entry"
            " WHERE account_id = $1 ORDER BY seq",
            member.account_id,
        )
        stored = await db.fetchval(
            "SELECT balance_cents FROM account_balance WHERE account_id = $1", member.account_id
        )
    finally:
        await db.close()
    assert [row["seq"] for row in rows] == list(range(1, len(rows) + 1))
    assert [row["id"] for row in rows] == [entry["id"] for entry in entries], (
        "the API's newest-first order disagrees with the ledger's sequence"
    )
    assert sum(row["amount_cents"] for row in rows) == (stored or 0) == balance
    return entries


def assert_no_server_error(responses: list[httpx.Response]) -> None:
    for response in responses:
        assert response.status_code < 500, response.text


async def test_concurrent_orders_spend_the_balance_exactly_and_never_below_zero(
    client: httpx.AsyncClient, sign_up: SignUp, database_url: str
) -> None:
    k, racers = 7, 42
    member = await sign_up()
    price = await price_cents(client, member, "ssl_dv")
    await fund(client, member, price * k)
    assert await balance_cents(client, member) == price * k

    # Half name the method, half rely on the default (balance): both paths must be race-safe.
    bodies = [
        order_body(n, **({"payment_method": "balance"} if n % 2 else {})) for n in range(racers)
    ]
    keys = [new_key("ord") for _ in bodies]
    responses = await asyncio.gather(
        *(
            client.post("/v1/orders", headers={**member.headers, "Idempotency-Key": key}, json=body)
            for key, body in zip(keys, bodies, strict=True)
        )
    )

    assert_no_server_error(responses)
    statuses = Counter(response.status_code for response in responses)
    assert statuses == {201: k, 402: racers - k}, statuses
    for response in responses:
        if response.status_code == 402:
            assert_problem(response, 402, "insufficient_funds")
    paid = {response.json()["id"] for response in responses if response.status_code == 201}
    assert len(paid) == k
    for response in responses:
        if response.status_code == 201:
            body = response.json()
            assert (body["status"], body["payment_method"], body["amount"]) == (
                "paid",
                "balance",
                money(price),
            )

    assert await balance_cents(client, member) == 0
    entries = await assert_books_balance(client, member, database_url)
    order_entries = [entry for entry in entries if entry["type"] == "order"]
    assert len(order_entries) == k
    assert {entry["order_id"] for entry in order_entries} == paid
    assert all(cents(entry["amount"]) == -price for entry in order_entries)
    assert [entry["type"] for entry in entries] == ["deposit"] + ["order"] * k

    orders = await all_pages(client, member, "/v1/orders")
    assert {order["id"] for order in orders} == paid, "a refused order was kept"
    assert all(order["status"] == "paid" for order in orders)

    # Every answer was stored under its key: retrying a refused and a paid order replays
    # them (same status and body), and no money moves.
    refused, accepted = (
        next(
            (key, body, response)
            for key, body, response in zip(keys, bodies, responses, strict=True)
            if response.status_code == status
        )
        for status in (402, 201)
    )
    for key, body, first in (refused, accepted):
        again = await client.post(
            "/v1/orders", headers={**member.headers, "Idempotency-Key": key}, json=body
        )
        assert again.status_code == first.status_code
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
    assert len(await assert_books_balance(client, member, database_url)) == len(entries)


@pytest.mark.parametrize("method", ["balance", "card"])
async def test_one_idempotency_key_raced_twenty_times_places_one_order(
    client: httpx.AsyncClient, sign_up: SignUp, database_url: str, method: str
) -> None:
    member = await sign_up()
    price = await price_cents(client, member, "ssl_ov")
    await fund(client, member, price * 3)
    key = new_key("same")
    body = order_body(1, product_id="ssl_ov", payment_method=method)

    responses = await asyncio.gather(
        *(
            client.post("/v1/orders", headers={**member.headers, "Idempotency-Key": key}, json=body)
            for _ in range(20)
        )
    )

    assert_no_server_error(responses)
    created = [response for response in responses if response.status_code == 201]
    for response in responses:
        if response.status_code != 201:
            assert_problem(response, 409, "idempotency_key_in_use")
            assert response.headers.get("retry-after")
    assert created, [response.status_code for response in responses]
    originals = [r for r in created if r.headers.get("idempotent-replayed") != "true"]
    assert len(originals) == 1, "the order was placed by more than one request"
    assert {r.json()["id"] for r in created} == {originals[0].json()["id"]}
    assert all(r.json() == originals[0].json() for r in created)
    order = originals[0].json()
    assert (order["status"], order["payment_method"], order["amount"]) == (
        "paid",
        method,
        money(price),
    )

    # Once the first answer is stored, a late retry is a replay: the same 201, nothing moves.
    replay = await client.post(
        "/v1/orders", headers={**member.headers, "Idempotency-Key": key}, json=body
    )
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == order

    orders = await all_pages(client, member, "/v1/orders")
    assert [o["id"] for o in orders] == [order["id"]]
    entries = await assert_books_balance(client, member, database_url)
    debits = [entry for entry in entries if entry["type"] == "order"]
    if method == "balance":
        assert [entry["order_id"] for entry in debits] == [order["id"]]
        assert await balance_cents(client, member) == price * 2
    else:
        assert debits == []
        assert await balance_cents(client, member) == price * 3


async def test_one_deposit_key_raced_credits_once(
    client: httpx.AsyncClient, sign_up: SignUp, database_url: str
) -> None:
    member = await sign_up()
    await fund(client, member, 0)
    key = new_key("dep-same")

    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/finance/deposits",
                headers={**member.headers, "Idempotency-Key": key},
                json={"amount": "250.00"},
            )
            for _ in range(20)
        )
    )

    assert_no_server_error(responses)
    created = [response for response in responses if response.status_code == 201]
    for response in responses:
        if response.status_code != 201:
            assert_problem(response, 409, "idempotency_key_in_use")
    originals = [r for r in created if r.headers.get("idempotent-replayed") != "true"]
    assert len(originals) == 1
    deposit_body = originals[0].json()
    assert all(r.json() == deposit_body for r in created)
    assert (deposit_body["status"], deposit_body["amount"], deposit_body["balance_after"]) == (
        "succeeded",
        "250.00",
        "250.00",
    )

    deposits = await all_pages(client, member, "/v1/finance/deposits")
    assert [d["id"] for d in deposits] == [deposit_body["id"]]
    entries = await assert_books_balance(client, member, database_url)
    assert [(e["type"], e["deposit_id"], e["amount"]) for e in entries] == [
        ("deposit", deposit_body["id"], "250.00")
    ]
    assert await balance_cents(client, member) == 25_000


@pytest.mark.parametrize(
    ("method", "one_key"), [("balance", False), ("card", False), ("balance", True)]
)
async def test_concurrent_cancels_refund_once(
    client: httpx.AsyncClient, sign_up: SignUp, database_url: str, method: str, one_key: bool
) -> None:
    member = await sign_up()
    price = await price_cents(client, member, "ssl_dv")
    await fund(client, member, price * 2)
    placed = await client.post(
        "/v1/orders",
        headers={**member.headers, "Idempotency-Key": new_key("ord")},
        json=order_body(3, payment_method=method),
    )
    assert placed.status_code == 201, placed.text
    order_id = placed.json()["id"]
    before = await balance_cents(client, member)
    # Without a key every cancel runs (all but one find the order canceled already); under
    # one key, one runs and the others replay it or are told it is still running.
    headers = dict(member.headers)
    if one_key:
        headers["Idempotency-Key"] = new_key("cancel")

    responses = await asyncio.gather(
        *(client.post(f"/v1/orders/{order_id}/cancel", headers=headers) for _ in range(15))
    )

    assert_no_server_error(responses)
    if one_key:
        for response in responses:
            if response.status_code != 200:
                assert_problem(response, 409, "idempotency_key_in_use")
        responses = [r for r in responses if r.status_code == 200]
        assert len([r for r in responses if "idempotent-replayed" not in r.headers]) == 1
    assert [r.status_code for r in responses] == [200] * len(responses), [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert {(b["id"], b["status"]) for b in bodies} == {(order_id, "canceled")}
    assert len({b["canceled_at"] for b in bodies}) == 1, "canceled more than once"

    entries = await assert_books_balance(client, member, database_url)
    refunds = [entry for entry in entries if entry["type"] == "refund"]
    db = await asyncpg.connect(database_url)
    try:
        refund_status = await db.fetchval(
            "SELECT refund_status FROM certificate_order WHERE id = $1", order_id
        )
    finally:
        await db.close()
    if method == "balance":
        assert [(e["order_id"], e["amount"]) for e in refunds] == [(order_id, money(price))]
        assert await balance_cents(client, member) == before + price == price * 2
    else:
        assert refunds == []
        assert await balance_cents(client, member) == before == price * 2
        assert refund_status == "succeeded"


async def test_concurrent_first_deposits_of_a_new_account_chain_up(
    client: httpx.AsyncClient, sign_up: SignUp, database_url: str
) -> None:
    """The first credit of an account creates its balance row: ten of them at once must
    still make one row and one chain, and each deposit's balance_after is its entry's."""
    member = await sign_up()
    await add_card(client, member)
    amounts = [1_000 + 137 * n for n in range(10)]

    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/finance/deposits",
                headers={**member.headers, "Idempotency-Key": new_key("dep")},
                json={"amount": money(amount)},
            )
            for amount in amounts
        )
    )

    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    entries = await assert_books_balance(client, member, database_url)
    assert await balance_cents(client, member) == sum(amounts)
    after = {e["deposit_id"]: e["balance_after"] for e in entries}
    assert {r.json()["id"]: r.json()["balance_after"] for r in responses} == after
    assert sorted(cents(e["amount"]) for e in entries) == sorted(amounts)


async def test_a_storm_of_orders_deposits_and_cancels_keeps_the_books(
    client: httpx.AsyncClient, sign_up: SignUp, database_url: str
) -> None:
    """Debits, credits and refunds of one account, all at once: the ledger stays one
    continuous chain whatever order the row lock lets them through."""
    member = await sign_up()
    price = await price_cents(client, member, "ssl_dv")
    await fund(client, member, price * 5)
    existing = []
    for n in range(5):
        placed = await client.post(
            "/v1/orders",
            headers={**member.headers, "Idempotency-Key": new_key("ord")},
            json=order_body(100 + n),
        )
        assert placed.status_code == 201, placed.text
        existing.append(placed.json()["id"])
    assert await balance_cents(client, member) == 0

    orders = [
        client.post(
            "/v1/orders",
            headers={**member.headers, "Idempotency-Key": new_key("ord")},
            json=order_body(n),
        )
        for n in range(25)
    ]
    deposits = [
        client.post(
            "/v1/finance/deposits",
            headers={**member.headers, "Idempotency-Key": new_key("dep")},
            json={"amount": money(price)},
        )
        for _ in range(4)
    ]
    cancels = [
        client.post(f"/v1/orders/{order_id}/cancel", headers=member.headers)
        for order_id in existing
        for _ in range(2)
    ]
    responses = await asyncio.gather(*orders, *deposits, *cancels)

    assert_no_server_error(responses)
    order_responses = responses[: len(orders)]
    deposit_responses = responses[len(orders) : len(orders) + len(deposits)]
    cancel_responses = responses[len(orders) + len(deposits) :]
    assert all(r.status_code == 201 for r in deposit_responses), [r.text for r in deposit_responses]
    assert all(r.status_code == 200 for r in cancel_responses), [r.text for r in cancel_responses]
    paid = [r for r in order_responses if r.status_code == 201]
    for response in order_responses:
        if response.status_code != 201:
            assert_problem(response, 402, "insufficient_funds")
    # 5 refunds and 4 deposits bring in 9 prices; at most that many orders can be paid.
    assert len(paid) <= 9

    entries = await assert_books_balance(client, member, database_url)
    counts = Counter(entry["type"] for entry in entries)
    assert counts == {"deposit": 5, "order": 5 + len(paid), "refund": 5}, counts
    assert await balance_cents(client, member) == (9 - len(paid)) * price
