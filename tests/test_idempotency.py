"""Idempotency-Key (SPEC §8): replays, reuse with another body, a key still in flight."""

import asyncio
import hashlib
import json

import asyncpg
import httpx

from tests.conftest import AddUser, SignUp, unique_email
from tests.money import TIMEOUT_SUCCEEDED, add_card, balance, deposit, fund, key, ledger, order
from tests.problems import assert_problem


async def test_replay_returns_the_first_response_and_moves_no_money(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    first = await order(client, admin, "order-1")
    again = await order(client, admin, "order-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert await balance(client, admin) == "51.00"


async def test_an_error_is_replayed_too(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await fund(client, admin, "10.00")
    first = await order(client, admin, "too-poor")
    assert_problem(first, 402, "insufficient_funds")
    again = await order(client, admin, "too-poor")
    assert again.status_code == 402
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


async def test_copies_of_a_refused_order_sent_at_once_get_its_one_402(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    """SPEC §8 for a failure: the first copy's 402 is kept under the key in the statement
    that refused it, so every other copy replays it (or, still running, gets 409); none
    runs an order of its own."""
    admin = await sign_up()
    await fund(client, admin, "20.00")  # an order costs 49.00
    for _ in range(5):
        shared = key()
        answers = await asyncio.gather(*(order(client, admin, shared) for _ in range(8)))
        originals = [
            a for a in answers if a.status_code == 402 and "idempotent-replayed" not in a.headers
        ]
        replays = [a for a in answers if a.headers.get("idempotent-replayed") == "true"]
        in_use = [a for a in answers if a.status_code == 409]
        assert len(originals) == 1, [(a.status_code, a.text) for a in answers]
        assert len(originals) + len(replays) + len(in_use) == 8
        assert all(r.status_code == 402 and r.content == originals[0].content for r in replays)
        assert all(a.json()["code"] == "idempotency_key_in_use" for a in in_use)
    assert await balance(client, admin) == "20.00"
    assert [e["type"] for e in await ledger(client, admin)] == ["deposit"]


async def test_same_key_with_another_body_is_422(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "200.00")
    assert (await order(client, admin, "k")).status_code == 201
    assert_problem(await order(client, admin, "k", validity_years=2), 422, "idempotency_key_reused")
    assert await balance(client, admin) == "151.00"


async def test_same_key_on_another_endpoint_is_422(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "200.00")
    assert (await deposit(client, admin, "50.00", "shared")).status_code == 201
    assert_problem(await order(client, admin, "shared"), 422, "idempotency_key_reused")


async def test_same_body_with_other_formatting_is_a_replay(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    headers = {**admin.headers, "Idempotency-Key": "fmt", "Content-Type": "application/json"}
    first = await client.post(
        "/v1/finance/deposits", headers=headers, content=b'{"amount":"20.00"}'
    )
    again = await client.post(
        "/v1/finance/deposits", headers=headers, content=b'{ "amount" : "20.00" }'
    )
    assert first.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await balance(client, admin) == "20.00"


async def test_keys_are_scoped_to_the_account(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    one, two = await sign_up(), await sign_up()
    await fund(client, one, "100.00")
    await fund(client, two, "100.00")
    assert (await order(client, one, "same-key")).status_code == 201
    response = await order(client, two, "same-key")
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers
    assert await balance(client, two) == "51.00"


async def test_key_in_flight_is_409(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await add_card(client, admin, TIMEOUT_SUCCEEDED)  # the charge hangs until the adapter times out
    first, second = await asyncio.gather(
        deposit(client, admin, "30.00", "slow"),
        _after(0.15, deposit(client, admin, "30.00", "slow")),
    )
    assert first.status_code == 202, first.text
    body = assert_problem(second, 409, "idempotency_key_in_use")
    assert body["detail"]
    replay = await deposit(client, admin, "30.00", "slow")
    assert replay.status_code == 202
    assert replay.headers["Idempotent-Replayed"] == "true"


async def _after(
    delay: float, request: "asyncio.Future[httpx.Response] | object"
) -> httpx.Response:
    await asyncio.sleep(delay)
    return await request  # type: ignore[misc]


async def test_a_validation_failure_does_not_burn_the_key(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    assert_problem(await deposit(client, admin, "1.001", "fix-me"), 422, "validation_error")
    fixed = await client.post(
        "/v1/finance/deposits",
        headers={**admin.headers, "Idempotency-Key": "fix-me"},
        json={"amount": "1.00"},
    )
    assert_problem(fixed, 422, "amount_out_of_range")  # ran: the key was free again


async def test_bad_keys_are_rejected(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    assert_problem(await deposit(client, admin, "20.00", "x" * 256), 422, "validation_error")
    assert_problem(await deposit(client, admin, "20.00", "tab\there"), 422, "validation_error")
    assert await ledger(client, admin) == []


async def test_optional_on_other_posts(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    headers = {**admin.headers, "Idempotency-Key": key()}
    body = {"name": "ci", "role": "user"}
    first = await client.post("/v1/api-keys", headers=headers, json=body)
    again = await client.post("/v1/api-keys", headers=headers, json=body)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json()["key"]
    assert again.json()["key"] is None  # the secret is shown once and never stored
    listed = await client.get("/v1/api-keys", headers=admin.headers)
    assert len(listed.json()["data"]) == 1


async def test_a_refused_caller_reserves_nothing_so_an_admin_can_use_the_same_key(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    admin = await sign_up()
    user = await add_user(admin, "user")
    body = {"name": "ci", "role": "user"}
    same = {"Idempotency-Key": "mint-a-key"}

    refused = await client.post("/v1/api-keys", headers={**user.headers, **same}, json=body)
    assert_problem(refused, 403, "forbidden")
    unknown = await client.post(
        "/v1/api-keys", headers={"X-API-Key": "sk_" + "x" * 40, **same}, json=body
    )
    assert_problem(unknown, 401, "unauthenticated")

    created = await client.post("/v1/api-keys", headers={**admin.headers, **same}, json=body)
    assert created.status_code == 201, created.text
    assert "Idempotent-Replayed" not in created.headers
    assert created.json()["key"]
    # Now the key is the admin's: a replay answers 201 again, without the secret.
    again = await client.post("/v1/api-keys", headers={**admin.headers, **same}, json=body)
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == created.json()["id"]
    assert again.json()["key"] is None


async def test_the_stored_fingerprint_does_not_reveal_a_password_sent_in_the_body(
    client: httpx.AsyncClient, sign_up: SignUp, database_url: str
) -> None:
    admin = await sign_up()
    password = "Guessable-Password-2026"
    body = {"email": unique_email("fp"), "name": "F", "role": "user", "password": password}
    response = await client.post(
        "/v1/users", headers={**admin.headers, "Idempotency-Key": "fp-1"}, json=body
    )
    assert response.status_code == 201, response.text
    db = await asyncpg.connect(database_url)
    try:
        stored = await db.fetchval(
            "SELECT fingerprint FROM idempotency_key WHERE account_id = $1 AND key = 'fp-1'",
            admin.account_id,
        )
    finally:
        await db.close()
    # A dump holder who guesses the password cannot confirm it with a plain digest.
    for candidate in (body, {**body, "password": password}):
        canonical = json.dumps(candidate, sort_keys=True, separators=(",", ":")).encode()
        plain = hashlib.sha256(b"POST /v1/users\n" + canonical).hexdigest()
        assert stored != plain
    assert password not in stored
