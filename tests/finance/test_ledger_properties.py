"""The ledger as a state machine: random sequences of card changes, deposits, orders (from the
balance and by card), cancels, settings changes and idempotent replays, all through HTTP
against the real app, the real database and the sandbox gateway over real HTTP.

After every step the books must balance, read through the API (the balance, every page of
the ledger) and straight from the database (the balance row, the ledger rows), and must
agree with a small model of what should have happened: balance in integer cents, the
expected ledger entries in order, the status of every order and deposit, the card on file
and the payment settings.

Hypothesis drives the machine synchronously, while the app is async and pytest's own loop
belongs to the session; so the machine's app instance, HTTP client and database connection
live on a private event loop in a worker thread, and each step runs to completion there.
"""

import asyncio
import concurrent.futures
import secrets
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from app.main import create_app
from tests.conftest import PASSWORD, client_for, make_settings, unique_email

T = TypeVar("T")

CARDS = {
    # kind: (number, what the sandbox does with it)
    "visa": "4242424242424242",  # saves, charges succeed
    "mastercard": "5555555555554444",  # saves, charges succeed
    "charges_declined": "4000000000000341",  # saves, every charge declined
    "declined": "4000000000000002",  # refused when saved: the old card stays
    "bad_luhn": "4242424242424241",  # not a card number: 422, nothing changes
}
GOOD, CHARGES_DECLINED = "good", "charges_declined"
DEPOSIT_MIN, DEPOSIT_MAX = 1_000, 10_000_000
UNCHANGED = "(not sent)"


def cents(amount: str) -> int:
    value = Decimal(amount) * 100
    assert value == value.to_integral_value(), amount
    return int(value)


def money(amount_cents: int) -> str:
    sign = "-" if amount_cents < 0 else ""
    whole, part = divmod(abs(amount_cents), 100)
    return f"{sign}{whole}.{part:02d}"


class PrivateLoop:
    """An event loop of our own in one worker thread: every coroutine of the machine runs
    there, so the app's pool, the gateway's HTTP client and asyncpg stay on one loop."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._loop = self._executor.submit(asyncio.new_event_loop).result()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self._executor.submit(self._loop.run_until_complete, coroutine).result(timeout=60)

    def close(self) -> None:
        self._executor.submit(self._loop.close).result()
        self._executor.shutdown()


@dataclass
class Model:
    balance: int = 0
    card: str | None = None  # GOOD, CHARGES_DECLINED or None
    card_last4: str | None = None
    balance_on: bool = False
    card_on: bool = True
    default: str | None = "card"
    # (type, signed cents, deposit or order id), oldest first
    entries: list[tuple[str, int, str]] = field(default_factory=list)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    deposits: dict[str, str] = field(default_factory=dict)

    def enabled(self, method: str) -> bool:
        return self.balance_on if method == "balance" else self.card_on


@dataclass(frozen=True)
class Sent:
    """A POST that carried an Idempotency-Key, and the answer it got."""

    path: str
    key: str
    body: dict[str, Any] | None
    status: int
    answer: dict[str, Any]


@dataclass
class World:
    """What all runs of the machine share: the app, its loop and a database connection."""

    loop: PrivateLoop
    app: FastAPI
    db: asyncpg.Connection
    products: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture
def world(database_url: str, sandbox_url: str) -> Iterator[World]:
    loop = PrivateLoop()
    app = create_app(make_settings(database_url, sandbox_url=sandbox_url, db_pool_size=2))
    db = loop.run(asyncpg.connect(database_url))
    try:
        yield World(loop, app, db)
    finally:
        loop.run(db.close())
        loop.run(app.state.gateway.aclose())
        loop.run(app.state.database.dispose())
        loop.close()


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    body = response.json()
    assert body["status"] == response.status_code
    code: str = body["code"]
    return code


def expect(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers.get("idempotent-replayed") is None
    if code is not None:
        assert problem_code(response) == code, response.text
    body: dict[str, Any] = response.json()
    return body


def machine_for(world: World) -> type[RuleBasedStateMachine]:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model()
            self.sent: list[Sent] = []
            self.lists_changed = False
            self.client = client_for(world.app)
            email = unique_email("ledger")
            signup = self.run(
                self.client.post(
                    "/v1/signup", json={"email": email, "password": PASSWORD, "name": "Ledger"}
                )
            )
            self.account_id = expect(signup, 201)["account"]["id"]
            token = self.run(
                self.client.post("/v1/auth/token", data={"username": email, "password": PASSWORD})
            )
            self.headers = {"Authorization": f"Bearer {expect(token, 200)['access_token']}"}
            if not world.products:
                products = expect(self.call("GET", "/v1/products"), 200)["data"]
                world.products.update({p["id"]: p for p in products})

        def teardown(self) -> None:
            self.run(self.client.aclose())

        # Plumbing

        def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
            return world.loop.run(coroutine)

        def call(
            self, method: str, path: str, *, key: str | None = None, **kwargs: Any
        ) -> httpx.Response:
            headers = dict(self.headers)
            if key is not None:
                headers["Idempotency-Key"] = key
            response = self.run(self.client.request(method, path, headers=headers, **kwargs))
            assert response.status_code < 500, (method, path, response.text)
            return response

        def post(self, path: str, body: dict[str, Any] | None) -> httpx.Response:
            """A first POST under a fresh key, remembered for replays when it was answered."""
            key = f"sm-{secrets.token_hex(8)}"
            response = self.call("POST", path, key=key, json=body)
            if response.status_code != 422 or problem_code(response) != "validation_error":
                self.sent.append(Sent(path, key, body, response.status_code, response.json()))
            return response

        def pages(self, path: str) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = []
            params: dict[str, Any] = {"limit": 100}
            while True:
                page = expect(self.call("GET", path, params=params), 200)
                items.extend(page["data"])
                if not page["has_more"]:
                    return items
                params["starting_after"] = page["data"][-1]["id"]

        @initialize(
            card=st.sampled_from(["visa", "visa", "visa", None]),
            funds=st.sampled_from([0, 15_000, 100_000]),
            balance=st.booleans(),
        )
        def start(self, card: str | None, funds: int, balance: bool) -> None:
            """Most runs start with a good card, and some money; half of them pay from the
            balance by default. (Every step here is a rule's, checked as the rule checks it.)"""
            if card is not None:
                self.put_card(card)
                if funds:
                    self.deposit(funds, as_number=False)
            if balance:
                self.patch_settings(
                    {"balance_payments_enabled": True, "default_payment_method": "balance"}
                )

        # The card on file

        @rule(kind=st.sampled_from(["visa", "visa", "visa", *CARDS]))
        def put_card(self, kind: str) -> None:
            number = CARDS[kind]
            response = self.call(
                "PUT",
                "/v1/account/card",
                json={
                    "number": number,
                    "exp_month": 12,
                    "exp_year": 2031,
                    "cvc": "123",
                    "holder_name": "Ledger Tester",
                },
            )
            if kind == "declined":
                expect(response, 402, "card_declined")
            elif kind == "bad_luhn":
                expect(response, 422, "invalid_card_number")
            else:
                card = expect(response, 200)
                assert card["last4"] == number[-4:]
                assert number not in response.text
                self.model.card = CHARGES_DECLINED if kind == "charges_declined" else GOOD
                self.model.card_last4 = number[-4:]
                return
            # Refused: the card on file (or its absence) is what it was.
            on_file = self.call("GET", "/v1/account/card")
            if self.model.card is None:
                expect(on_file, 404, "no_card_on_file")
            else:
                assert expect(on_file, 200)["last4"] == self.model.card_last4

        # Deposits

        @rule(
            amount=st.one_of(
                st.integers(DEPOSIT_MIN, 20_000),
                st.integers(20_000, 100_000),
                st.integers(DEPOSIT_MIN, 100_000),
                st.sampled_from([DEPOSIT_MIN, 999, 1, DEPOSIT_MAX + 1]),
            ),
            as_number=st.booleans(),
        )
        def deposit(self, amount: int, as_number: bool) -> None:
            wire: Any = amount / 100 if as_number else money(amount)
            response = self.post("/v1/finance/deposits", {"amount": wire})
            self.lists_changed = True
            model = self.model
            if not DEPOSIT_MIN <= amount <= DEPOSIT_MAX:
                expect(response, 422, "amount_out_of_range")
            elif model.card is None:
                expect(response, 409, "no_card_on_file")
            elif model.card == CHARGES_DECLINED:
                body = expect(response, 402, "card_declined")
                model.deposits[body["deposit_id"]] = "failed"
            else:
                body = expect(response, 201)
                assert (body["status"], body["amount"]) == ("succeeded", money(amount))
                model.balance += amount
                assert body["balance_after"] == money(model.balance)
                model.deposits[body["id"]] = "succeeded"
                model.entries.append(("deposit", amount, body["id"]))

        # Orders

        @rule(
            product_id=st.sampled_from(
                ["ssl_dv", "ssl_dv", "ssl_ov", "ssl_ev", "ssl_dv_wildcard", "ssl_ov_wildcard"]
            ),
            years=st.sampled_from([1, 1, 2, 3]),
            san_count=st.sampled_from([0, 0, 1, 2, 3]),
            method=st.sampled_from([None, "balance", "card"]),
        )
        def order(self, product_id: str, years: int, san_count: int, method: str | None) -> None:
            product = world.products[product_id]
            amount = years * (
                cents(product["price_per_year"]) + san_count * cents(product["price_per_extra_san"])
            )
            body: dict[str, Any] = {
                "product_id": product_id,
                "common_name": f"www{len(self.sent)}.example.com",
                "sans": [f"san{n}.example.com" for n in range(san_count)],
                "validity_years": years,
            }
            if method is not None:
                body["payment_method"] = method
            response = self.post("/v1/orders", body)
            self.lists_changed = True

            model = self.model
            chosen = method or model.default
            if chosen is None:
                expect(response, 422, "payment_method_required")
            elif not model.enabled(chosen):
                expect(response, 422, "payment_method_disabled")
            elif chosen == "card" and model.card is None:
                expect(response, 409, "no_card_on_file")
            elif chosen == "card" and model.card == CHARGES_DECLINED:
                problem = expect(response, 402, "card_declined")
                model.orders[problem["order_id"]] = {
                    "status": "failed",
                    "amount": amount,
                    "method": "card",
                }
            elif chosen == "balance" and amount > model.balance:
                expect(response, 402, "insufficient_funds")
            else:
                placed = expect(response, 201)
                assert (placed["status"], placed["payment_method"], placed["amount"]) == (
                    "paid",
                    chosen,
                    money(amount),
                )
                model.orders[placed["id"]] = {"status": "paid", "amount": amount, "method": chosen}
                if chosen == "balance":
                    model.balance -= amount
                    model.entries.append(("order", -amount, placed["id"]))

        @precondition(lambda self: self.model.orders)
        @rule(
            pick=st.integers(min_value=0),
            times=st.sampled_from([1, 1, 2]),
            keyed=st.booleans(),
            ghost=st.integers(0, 9),
        )
        def cancel(self, pick: int, times: int, keyed: bool, ghost: int) -> None:
            """Cancel an earlier order, sometimes twice (a refund happens once), sometimes
            under an Idempotency-Key; now and then one that does not exist."""
            self.lists_changed = True
            if ghost == 0:
                response = self.call("POST", f"/v1/orders/ord_{secrets.token_hex(8)}/cancel")
                expect(response, 404, "not_found")
                return
            order_id = sorted(self.model.orders)[pick % len(self.model.orders)]
            order = self.model.orders[order_id]
            for _ in range(times):
                path = f"/v1/orders/{order_id}/cancel"
                response = self.post(path, None) if keyed else self.call("POST", path)
                if order["status"] == "failed":
                    expect(response, 409, "order_not_cancelable")
                    continue
                assert (expect(response, 200)["status"], response.json()["id"]) == (
                    "canceled",
                    order_id,
                )
                if order["status"] == "paid":
                    order["status"] = "canceled"
                    if order["method"] == "balance":
                        self.model.balance += order["amount"]
                        self.model.entries.append(("refund", order["amount"], order_id))

        # Payment settings

        @rule(
            balance=st.sampled_from([UNCHANGED, True, False]),
            card=st.sampled_from([UNCHANGED, True, False]),
            default=st.sampled_from([UNCHANGED, None, "balance", "card"]),
        )
        def change_settings(self, balance: Any, card: Any, default: Any) -> None:
            """PATCH any subset of the payment modes; the rules of SPEC §5 decide 200 or 422."""
            changes = {
                "balance_payments_enabled": balance,
                "card_payments_enabled": card,
                "default_payment_method": default,
            }
            self.patch_settings({k: v for k, v in changes.items() if v is not UNCHANGED})

        def patch_settings(self, patch: dict[str, Any]) -> None:
            model = self.model
            balance_on = patch.get("balance_payments_enabled", model.balance_on)
            card_on = patch.get("card_payments_enabled", model.card_on)
            default = patch.get("default_payment_method", model.default)
            broken = set()
            if not balance_on and not card_on:
                broken.add("no_payment_method_enabled")
            if default is not None and not (balance_on if default == "balance" else card_on):
                broken.add("default_method_disabled")
            response = self.call("PATCH", "/v1/finance/settings", json=patch)
            if broken:
                assert response.status_code == 422, response.text
                assert problem_code(response) in broken, response.text
            else:
                expect(response, 200)
                model.balance_on, model.card_on, model.default = balance_on, card_on, default
            current = expect(self.call("GET", "/v1/finance/settings"), 200)
            assert (
                current["balance_payments_enabled"],
                current["card_payments_enabled"],
                current["default_payment_method"],
            ) == (model.balance_on, model.card_on, model.default)

        # Idempotency

        @precondition(lambda self: self.sent)
        @rule(pick=st.integers(min_value=0))
        def replay(self, pick: int) -> None:
            """The same key and body again: the first answer, replayed; no money moves."""
            sent = self.sent[pick % len(self.sent)]
            response = self.call("POST", sent.path, key=sent.key, json=sent.body)
            assert response.status_code == sent.status, response.text
            assert response.headers["idempotent-replayed"] == "true"
            assert response.json() == sent.answer

        @precondition(lambda self: any(s.body for s in self.sent))
        @rule(pick=st.integers(min_value=0))
        def reuse_a_key_for_another_request(self, pick: int) -> None:
            with_body = [s for s in self.sent if s.body]
            sent = with_body[pick % len(with_body)]
            assert sent.body is not None
            other = dict(sent.body)
            if "amount" in other:
                other["amount"] = money(cents(str(other["amount"])) + 1)
            else:
                other["common_name"] = "other." + other["common_name"]
            response = self.call("POST", sent.path, key=sent.key, json=other)
            expect(response, 422, "idempotency_key_reused")

        # The books

        @invariant()
        def books_balance(self) -> None:
            model = self.model
            balance = expect(self.call("GET", "/v1/finance/balance"), 200)
            assert cents(balance["balance"]) == model.balance

            entries = list(reversed(self.pages("/v1/finance/transactions")))
            running = 0
            for entry in entries:
                running += cents(entry["amount"])
                assert cents(entry["balance_after"]) == running, entries
                assert running >= 0, entries
            assert running == model.balance
            assert [
                (e["type"], cents(e["amount"]), e["deposit_id"] or e["order_id"]) for e in entries
            ] == model.entries

            books = self.run(self._read_books())
            assert (books["stored"] or 0) == books["total"] == model.balance
            assert books["seqs"] == list(range(1, len(entries) + 1))
            assert books["orders"] == {oid: o["status"] for oid, o in model.orders.items()}
            assert books["deposits"] == model.deposits

        async def _read_books(self) -> dict[str, Any]:
            """One consistent snapshot of the account's money rows."""
            db, account = world.db, self.account_id
            async with db.transaction(isolation="repeatable_read", readonly=True):
                return {
                    "stored": await db.fetchval(
                        "SELECT balance_cents FROM account_balance WHERE account_id = $1", account
                    ),
                    "total": await db.fetchval(
                        "SELECT coalesce(sum(amount_cents), 0) FROM ledger_entry"
                        " WHERE account_id = $1",
                        account,
                    ),
                    "seqs": [
                        row["seq"]
                        for row in await db.fetch(
                            "SELECT seq FROM ledger_entry WHERE account_id = $1 ORDER BY seq",
                            account,
                        )
                    ],
                    "orders": dict(
                        await db.fetch(
                            "SELECT id, status FROM certificate_order WHERE account_id = $1",
                            account,
                        )
                    ),
                    "deposits": dict(
                        await db.fetch(
                            "SELECT id, status FROM deposit WHERE account_id = $1", account
                        )
                    ),
                }

        @precondition(lambda self: self.lists_changed)
        @invariant()
        def orders_and_deposits_listed_as_modelled(self) -> None:
            """What the database holds (checked above) is what the API lists."""
            orders = {o["id"]: o["status"] for o in self.pages("/v1/orders")}
            assert orders == {oid: o["status"] for oid, o in self.model.orders.items()}
            deposits = {d["id"]: d["status"] for d in self.pages("/v1/finance/deposits")}
            assert deposits == self.model.deposits
            self.lists_changed = False

    return LedgerMachine


def test_ledger_state_machine(world: World) -> None:
    run_state_machine_as_test(
        machine_for(world),
        settings=settings(
            max_examples=15,
            stateful_step_count=15,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
