"""SPEC §2 and §7: an integration's API key never mints a less restricted credential, and an
Azure Key Vault key never causes a card charge or changes the card, whatever its role. Each
refusal is a 403 that leaves nothing behind (no key, user, deposit or charge)."""

import httpx
import pytest

from tests.conftest import PASSWORD, Member, SignUp, unique_email
from tests.money import add_card, card_body, fund, key, order
from tests.problems import assert_problem


async def integration_key(
    client: httpx.AsyncClient, admin: Member, role: str, integration: str = "azure_key_vault"
) -> dict[str, str]:
    response = await client.post(
        "/v1/api-keys",
        headers=admin.headers,
        json={"name": "connector", "role": role, "integration": integration},
    )
    assert response.status_code == 201, response.text
    return {"X-API-Key": response.json()["key"]}


async def count(client: httpx.AsyncClient, admin: Member, path: str) -> int:
    return len((await client.get(path, headers=admin.headers)).json()["data"])


@pytest.mark.parametrize("role", ["admin", "finance", "user"])
async def test_an_integration_key_mints_neither_keys_nor_users(
    client: httpx.AsyncClient, sign_up: SignUp, role: str
) -> None:
    admin = await sign_up()
    connector = await integration_key(client, admin, role)
    keys_before = await count(client, admin, "/v1/api-keys")
    minted = await client.post(
        "/v1/api-keys",
        headers={**connector, "Idempotency-Key": key()},
        json={"name": "escalated", "role": "admin"},
    )
    assert_problem(minted, 403, "forbidden")
    user = await client.post(
        "/v1/users",
        headers=connector,
        json={"email": unique_email(), "name": "X", "role": "admin", "password": PASSWORD},
    )
    assert_problem(user, 403, "forbidden")
    assert await count(client, admin, "/v1/api-keys") == keys_before
    assert await count(client, admin, "/v1/users") == 1


async def test_an_integration_admin_key_cannot_revoke_keys_or_change_users(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    connector = await integration_key(client, admin, "admin")
    [first, *_] = (await client.get("/v1/api-keys", headers=admin.headers)).json()["data"]
    assert_problem(
        await client.delete(f"/v1/api-keys/{first['id']}", headers=connector), 403, "forbidden"
    )
    me = admin.user_id
    patched = await client.patch(f"/v1/users/{me}", headers=connector, json={"role": "user"})
    assert_problem(patched, 403, "forbidden")
    assert_problem(await client.delete(f"/v1/users/{me}", headers=connector), 403, "forbidden")


@pytest.mark.parametrize("role", ["admin", "finance"])
async def test_a_key_vault_key_cannot_deposit_and_nothing_is_charged_or_recorded(
    client: httpx.AsyncClient, sign_up: SignUp, role: str
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    connector = await integration_key(client, admin, role)
    same = key()
    response = await client.post(
        "/v1/finance/deposits",
        headers={**connector, "Idempotency-Key": same},
        json={"amount": "50.00"},
    )
    assert_problem(response, 403, "payment_method_not_allowed")
    assert await count(client, admin, "/v1/finance/deposits") == 0
    # Nothing was recorded under the key either: the account's admin may use it.
    mine = await client.post(
        "/v1/finance/deposits",
        headers={**admin.headers, "Idempotency-Key": same},
        json={"amount": "50.00"},
    )
    assert mine.status_code == 201, mine.text


@pytest.mark.parametrize("role", ["admin", "finance"])
async def test_a_key_vault_key_cannot_change_or_remove_the_card(
    client: httpx.AsyncClient, sign_up: SignUp, role: str
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    before = (await client.get("/v1/account/card", headers=admin.headers)).json()
    connector = await integration_key(client, admin, role)
    replaced = await client.put(
        "/v1/account/card", headers=connector, json=card_body("5555555555554444")
    )
    assert_problem(replaced, 403, "forbidden")
    assert_problem(await client.delete("/v1/account/card", headers=connector), 403, "forbidden")
    assert (await client.get("/v1/account/card", headers=admin.headers)).json() == before


async def test_a_key_vault_key_still_pays_orders_from_the_balance(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    await fund(client, admin, "100.00")
    connector = await integration_key(client, admin, "finance")
    placed = await order(client, connector)
    assert placed.status_code == 201, placed.text
    assert placed.json()["payment_method"] == "balance"
