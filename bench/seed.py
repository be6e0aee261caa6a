"""Accounts to load: signed up, logged in and given an API key through the public API, with
balance payments on as their default, then funded with an operator's balance adjustment
(deposits go through the card gateway and are capped far below what a run spends)."""

import asyncio
import secrets
from dataclasses import asdict, dataclass

import httpx

from app.config import Settings
from app.finance.service import adjust_balance
from app.kit.db import Database, create_engine

PASSWORD = "Correct-Horse-Battery-7"
# Enough for any run: 10,000,000.00 is over 200,000 orders of 49.00 per account.
FUNDING_CENTS = 1_000_000_000


@dataclass(frozen=True)
class SeededAccount:
    account_id: str
    api_key: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


async def _seed_one(http: httpx.AsyncClient, email: str) -> SeededAccount:
    signup = await http.post(
        "/v1/signup",
        json={"email": email, "password": PASSWORD, "name": "Bench", "company_name": "Bench"},
    )
    signup.raise_for_status()
    account_id = signup.json()["account"]["id"]
    token = await http.post("/v1/auth/token", data={"username": email, "password": PASSWORD})
    token.raise_for_status()
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    key = await http.post("/v1/api-keys", headers=bearer, json={"name": "bench", "role": "admin"})
    key.raise_for_status()
    settings = await http.patch(
        "/v1/finance/settings",
        headers=bearer,
        json={"balance_payments_enabled": True, "default_payment_method": "balance"},
    )
    settings.raise_for_status()
    return SeededAccount(account_id, key.json()["key"])


async def seed_accounts(base_url: str, count: int, parallel: int = 4) -> list[SeededAccount]:
    """`count` new accounts through the API, `parallel` at a time (sign-up and log-in each hash
    a password with Argon2, the bulk of the seeding time)."""
    tag = secrets.token_hex(4)
    gate = asyncio.Semaphore(parallel)

    async def seed(index: int) -> SeededAccount:
        async with gate:
            return await _seed_one(http, f"bench-{tag}-{index}@example.com")

    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        return list(await asyncio.gather(*(seed(index) for index in range(count))))


async def fund(database_url: str, account_ids: list[str], cents: int = FUNDING_CENTS) -> None:
    """Credit each account with an `adjustment` entry, as `billing adjust-balance` does."""
    settings = Settings(
        database_url=database_url,
        secret_key=secrets.token_urlsafe(32),
        environment="development",  # the bench database: the sandbox is fine
    )
    database = Database(create_engine(settings))
    try:
        for account_id in account_ids:
            await database.run(
                lambda unit: adjust_balance(unit, account_id, cents, "bench funding")  # noqa: B023
            )
    finally:
        await database.dispose()
