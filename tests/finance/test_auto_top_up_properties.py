"""Automatic top-up (SPEC §14) as a state machine: random sequences of debits (orders paid
from the balance, operator adjustments), credits, API deposits, rule changes (on, off, saved
again, refused), card changes (a good card, one whose charges are declined, the two timeout
cards, no card), worker passes and reconciler passes, all against the real app, database and
sandbox gateway.

A small model predicts every automatic deposit: made exactly when a debit crosses the
threshold of an active rule with none pending and room left under the monthly limit, then
charged by the worker with the card on file at that moment if the rule is still active
(failed if it was suspended or turned off meanwhile), and settled by the reconciler when
the charge timed out. After every step the account is read back from the database and
the API: at most one automatic deposit pending, the month's total never past the limit, the
books balanced (each succeeded deposit credited once, nothing else), the rule's status and
reason as modelled, and one suspension email per suspension.

The app, its worker and a database connection live on a private event loop in a thread, as
in tests/finance/test_ledger_properties.py (Hypothesis drives the machine synchronously).
"""

import secrets
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from app.finance.service import adjust_balance
from app.kit.errors import ApiError
from app.main import create_app
from app.worker.reconcile import reconcile_pending
from app.worker.runner import Worker
from tests.conftest import PASSWORD, client_for, make_settings, unique_email
from tests.finance.test_auto_top_up import drain
from tests.finance.test_ledger_properties import PrivateLoop, World, expect, money
from tests.money import CHARGES_DECLINED, TIMEOUT_NOT_CHARGED, TIMEOUT_SUCCEEDED, VISA, card_body
from tests.worker.conftest import make_worker

T = TypeVar("T")

GOOD, DECLINED, TIMEOUT_CHARGED, TIMEOUT_LOST = "good", "declined", "timeout_charged", "lost"
CARDS = {
    GOOD: VISA,  # charges succeed
    DECLINED: CHARGES_DECLINED,  # saves fine, every charge declined
    TIMEOUT_CHARGED: TIMEOUT_SUCCEEDED,  # the charge times out, but was made
    TIMEOUT_LOST: TIMEOUT_NOT_CHARGED,  # the charge times out, and was never made
}
TIMEOUTS = (TIMEOUT_CHARGED, TIMEOUT_LOST)
ORDER = 4_900  # ssl_dv, one year
ACTIONS = (
    *["order"] * 2,
    *["debit_across"] * 3,
    "debit",
    *["credit_back_above"] * 2,
    "credit",
    "api_deposit",
    *["turn_on", "save_again", "turn_off", "save_invalid_rule"],
    *["card:" + kind for kind in (GOOD, DECLINED, TIMEOUT_CHARGED, TIMEOUT_LOST)],
    "remove_card",
    *["worker"] * 3,
    "reconciler",
)
DEPOSIT_MIN = 1_000


@dataclass
class Rule:
    threshold: int
    amount: int
    monthly_limit: int

    def wire(self) -> dict[str, str]:
        return {
            "threshold": money(self.threshold),
            "amount": money(self.amount),
            "monthly_limit": money(self.monthly_limit),
        }


@dataclass
class TopUp:
    """An automatic deposit as the model expects it."""

    amount: int
    status: str = "pending"
    # The card the worker began charging (a timeout card: the reconciler decides); None: not
    # begun.
    charged_with: str | None = None


@dataclass
class Model:
    balance: int = 0
    card: str | None = None
    rule: Rule | None = None
    status: str | None = None  # None (off), "active" or "suspended"
    reason: str | None = None
    top_ups: dict[str, TopUp] = field(default_factory=dict)
    # API deposits: id -> status; the pending ones -> the (timeout) card they were charged to
    deposits: dict[str, str] = field(default_factory=dict)
    pending_deposits: dict[str, str] = field(default_factory=dict)
    limits: list[int] = field(default_factory=list)  # every monthly limit set, in order
    suspensions: int = 0  # each one emails the one notification address once

    @property
    def pending_top_up(self) -> TopUp | None:
        return next((t for t in self.top_ups.values() if t.status == "pending"), None)

    @property
    def month_total(self) -> int:
        # The whole run is one month (UTC); a run across midnight at a month's end would not be.
        return sum(t.amount for t in self.top_ups.values() if t.status != "failed")

    def suspend(self, reason: str) -> None:
        """What suspend_auto_top_up does: only an active rule, and then one email."""
        if self.status == "active":
            self.status, self.reason = "suspended", reason
            self.suspensions += 1


@dataclass(frozen=True)
class Row:
    status: str
    source: str
    amount: int
    failure_code: str | None
    charge_begun: bool


@dataclass
class TopUpWorld:
    world: World
    worker: Worker


@pytest.fixture
def top_up_world(database_url: str, sandbox_url: str) -> Iterator[TopUpWorld]:
    loop = PrivateLoop()
    app = create_app(make_settings(database_url, sandbox_url=sandbox_url, db_pool_size=2))
    db = loop.run(asyncpg.connect(database_url))

    async def build_worker() -> Worker:
        return make_worker(app, None)

    worker = loop.run(build_worker())
    try:
        yield TopUpWorld(World(loop, app, db), worker)
    finally:
        loop.run(worker.webhooks.aclose())
        loop.run(db.close())
        loop.run(app.state.gateway.aclose())
        loop.run(app.state.database.dispose())
        loop.close()


# A threshold near the balance (this far below it), so that debits cross it; or anywhere.
threshold_choice = st.tuples(st.booleans(), st.integers(0, 6_000))
amount_cents = st.integers(DEPOSIT_MIN, 20_000)
# How many top-ups of the amount the month has room for, and a remainder that buys none.
room = st.tuples(st.integers(1, 3), st.integers(0, 999))


def machine_for(top_up_world: TopUpWorld) -> type[RuleBasedStateMachine]:
    world, worker = top_up_world.world, top_up_world.worker

    class AutoTopUpMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.model = Model()
            self.client = client_for(world.app)
            email = unique_email("topup")
            signup = self.run(
                self.client.post(
                    "/v1/signup", json={"email": email, "password": PASSWORD, "name": "Top-up"}
                )
            )
            self.account_id = expect(signup, 201)["account"]["id"]
            token = self.run(
                self.client.post("/v1/auth/token", data={"username": email, "password": PASSWORD})
            )
            self.headers = {"Authorization": f"Bearer {expect(token, 200)['access_token']}"}

        def teardown(self) -> None:
            self.run(self.client.aclose())

        # Plumbing

        def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
            return world.loop.run(coroutine)

        def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
            headers = dict(self.headers)
            if method == "POST":
                headers["Idempotency-Key"] = f"tu-{secrets.token_hex(8)}"
            response = self.run(self.client.request(method, path, headers=headers, **kwargs))
            assert response.status_code < 500, (method, path, response.text)
            return response

        def rows(self) -> dict[str, Row]:
            """The account's deposits, straight from the database."""
            found = self.run(
                world.db.fetch(
                    "SELECT id, status, source, amount_cents, failure_code,"
                    " charge_started_at IS NOT NULL FROM deposit WHERE account_id = $1",
                    self.account_id,
                )
            )
            return {r[0]: Row(*r[1:]) for r in found}

        def automatic_rows(self) -> dict[str, Row]:
            return {i: r for i, r in self.rows().items() if r.source == "auto_top_up"}

        @initialize(
            funds=st.integers(10_000, 40_000),
            start_on=st.sampled_from([True, True, True, False]),
            threshold=threshold_choice,
            amount=amount_cents,
            limit_room=room,
        )
        def start(
            self,
            funds: int,
            start_on: bool,
            threshold: tuple[bool, int],
            amount: int,
            limit_room: tuple[int, int],
        ) -> None:
            """A good card, some money, orders paid from the balance; the rule on in most
            runs. (Each step here is a rule's, checked as the rule checks it.)"""
            self.put_card(GOOD)
            self.api_deposit(funds)
            expect(
                self.call(
                    "PATCH",
                    "/v1/finance/settings",
                    json={"balance_payments_enabled": True, "default_payment_method": "balance"},
                ),
                200,
            )
            if start_on:
                self.turn_on(threshold, amount, limit_room)

        # One rule, its actions weighted so that every example mixes crossings, card and rule
        # changes and background passes (separate rules would each be left out of whole
        # examples, and the interleavings that matter would be rare).

        @rule(
            action=st.sampled_from(ACTIONS),
            amount=st.integers(1, 30_000),
            threshold=threshold_choice,
            limit_room=room,
            bad=st.sampled_from(["limit_below_amount", "amount_below_minimum", "no_limit"]),
        )
        def step(
            self,
            action: str,
            amount: int,
            threshold: tuple[bool, int],
            limit_room: tuple[int, int],
            bad: str,
        ) -> None:
            model = self.model
            if action == "order":
                self.place_order()
            elif action == "debit_across" and model.rule is not None and model.balance > 0:
                self.debit_across_the_threshold(amount % 3_000 + 1)
            elif action in ("debit", "debit_across"):
                self.debit_by_adjustment(amount % 20_000 + 1)
            elif action == "credit_back_above" and model.rule is not None:
                self.credit_back_above_the_threshold(amount % 6_000)
            elif action in ("credit", "credit_back_above"):
                self.credit_by_adjustment(amount % 20_000 + 1)
            elif action == "api_deposit":
                self.api_deposit(max(amount, DEPOSIT_MIN))
            elif action == "save_again" and model.rule is not None:
                self.save_again()
            elif action == "turn_off" and model.rule is not None:
                self.turn_off()
            elif action in ("turn_on", "save_again", "turn_off"):
                self.turn_on(threshold, max(amount % 20_000, DEPOSIT_MIN), limit_room)
            elif action == "save_invalid_rule":
                self.save_invalid_rule(bad, max(amount % 20_000, DEPOSIT_MIN))
            elif action == "remove_card":
                self.remove_card()
            elif action.startswith("card:"):
                self.put_card(action.removeprefix("card:"))
            elif action == "worker":
                self.worker_pass()
            else:
                assert action == "reconciler", action
                self.reconciler_pass()

        # Debits: each may cross the threshold

        def place_order(self) -> None:
            response = self.call(
                "POST",
                "/v1/orders",
                json={
                    "product_id": "ssl_dv",
                    "common_name": "www.example.com",
                    "validity_years": 1,
                },
            )
            if self.model.balance < ORDER:
                expect(response, 402, "insufficient_funds")
                return
            placed = expect(response, 201)
            assert (placed["status"], placed["payment_method"]) == ("paid", "balance")
            self.debited(ORDER)

        def debit_by_adjustment(self, amount: int) -> None:
            if self.adjust(-amount):
                self.debited(amount)
            else:
                assert amount > self.model.balance

        def debit_across_the_threshold(self, overshoot: int) -> None:
            """A debit to just below the threshold (when the balance is at or above it)."""
            assert self.model.rule is not None
            above = self.model.balance - self.model.rule.threshold
            self.debit_by_adjustment(min(self.model.balance, max(above, 0) + overshoot))

        def debited(self, amount: int) -> None:
            """The debit of `amount` went through: an automatic deposit was made exactly when
            it crossed the threshold of an active rule with none pending and room left."""
            model, before = self.model, self.model.balance
            model.balance -= amount
            known = set(model.top_ups)
            made = {i: r for i, r in self.automatic_rows().items() if i not in known}
            rule_ = model.rule
            crossed = rule_ is not None and before >= rule_.threshold > model.balance
            expected = (
                rule_ is not None
                and crossed
                and model.status == "active"
                and model.pending_top_up is None
                and model.month_total + rule_.amount <= rule_.monthly_limit
            )
            if expected and model.card is None:  # nothing to charge: suspended instead
                model.suspend("no_card_on_file")
                expected = False
            if not expected:
                assert made == {}, (before, model.balance, rule_, model.status, made)
                return
            assert rule_ is not None
            [(deposit_id, row)] = made.items()
            assert (row.status, row.amount, row.charge_begun) == ("pending", rule_.amount, False)
            model.top_ups[deposit_id] = TopUp(rule_.amount)

        # Credits: never a crossing

        def credit_by_adjustment(self, amount: int) -> None:
            assert self.adjust(amount)
            self.model.balance += amount

        def adjust(self, amount: int) -> bool:
            async def adjusting() -> bool:
                try:
                    await world.app.state.database.run(
                        lambda unit: adjust_balance(unit, self.account_id, amount, "model")
                    )
                except ApiError as error:
                    refusal = error.code
                else:
                    return True
                assert refusal == "insufficient_funds"
                return False

            return self.run(adjusting())

        def credit_back_above_the_threshold(self, offset: int) -> None:
            assert self.model.rule is not None
            short = self.model.rule.threshold + offset - self.model.balance
            self.credit_by_adjustment(max(short, 1))

        def api_deposit(self, amount: int) -> None:
            response = self.call("POST", "/v1/finance/deposits", json={"amount": money(amount)})
            model = self.model
            if model.card is None:
                expect(response, 409, "no_card_on_file")
            elif model.card == DECLINED:
                # A declined API deposit is no automatic one: the rule is left alone.
                model.deposits[expect(response, 402, "card_declined")["deposit_id"]] = "failed"
            elif model.card in TIMEOUTS:
                body = expect(response, 202)
                assert (body["status"], body["source"]) == ("pending", "api")
                model.deposits[body["id"]] = "pending"
                model.pending_deposits[body["id"]] = model.card
            else:
                body = expect(response, 201)
                assert (body["status"], body["source"]) == ("succeeded", "api")
                model.balance += amount
                model.deposits[body["id"]] = "succeeded"

        # The rule

        def turn_on(
            self, threshold: tuple[bool, int], amount: int, limit_room: tuple[int, int]
        ) -> None:
            near, offset = threshold
            cents = max(self.model.balance - offset, 0) if near else offset * 5
            times, extra = limit_room
            self.save_rule(Rule(cents, amount, amount * times + extra))

        def save_again(self) -> None:
            """The same rule saved again: re-activates a suspended one."""
            assert self.model.rule is not None
            self.save_rule(Rule(**vars(self.model.rule)))

        def save_rule(self, new: Rule) -> None:
            response = self.call("PATCH", "/v1/finance/settings", json={"auto_top_up": new.wire()})
            model = self.model
            if model.card is None:
                expect(response, 409, "no_card_on_file")
                return
            expect(response, 200)
            model.rule, model.status, model.reason = new, "active", None
            model.limits.append(new.monthly_limit)

        def save_invalid_rule(self, bad: str, amount: int) -> None:
            """Refused, and nothing changes (checked by the invariants)."""
            body = {"threshold": "100.00", "amount": money(amount), "monthly_limit": money(amount)}
            if bad == "limit_below_amount":
                body["monthly_limit"] = money(amount - 1)
            elif bad == "amount_below_minimum":
                body["amount"] = money(DEPOSIT_MIN - 1)
            else:
                del body["monthly_limit"]
            response = self.call("PATCH", "/v1/finance/settings", json={"auto_top_up": body})
            expect(response, 422, "validation_error")

        def turn_off(self) -> None:
            response = self.call("PATCH", "/v1/finance/settings", json={"auto_top_up": None})
            assert expect(response, 200)["auto_top_up"] is None
            model = self.model
            model.rule = model.status = model.reason = None

        # The card on file

        def put_card(self, kind: str) -> None:
            number = CARDS[kind]
            card = expect(self.call("PUT", "/v1/account/card", json=card_body(number)), 200)
            assert card["last4"] == number[-4:]
            self.model.card = kind  # a new card re-activates nothing

        def remove_card(self) -> None:
            response = self.call("DELETE", "/v1/account/card")
            model = self.model
            if model.card is None:
                expect(response, 404, "no_card_on_file")
                return
            assert response.status_code == 204, response.text
            model.card = None
            model.suspend("no_card_on_file")

        # The worker and the reconciler

        def worker_pass(self) -> None:
            """The worker charges the queued automatic deposit with the card on file now, if
            the rule is still active: suspended (a removed card, SPEC §14: "until the
            settings are saved again") or turned off since, it charges nothing, not even a
            card added meanwhile."""
            # Earlier examples leave messages behind: passes until nothing is due.
            self.run(drain(worker, rounds=0))
            model, rows = self.model, self.automatic_rows()
            for deposit_id, top_up in model.top_ups.items():
                if top_up.status != "pending" or top_up.charged_with is not None:
                    continue  # settled, or the reconciler's
                self.charged(top_up, rows[deposit_id])

        def charged(self, top_up: TopUp, row: Row) -> None:
            model = self.model
            if model.status != "active":
                assert (row.status, row.failure_code) == ("failed", "auto_top_up_not_active"), (
                    "charged while not active",
                    row,
                )
                top_up.status = "failed"
            elif model.card is None:
                assert (row.status, row.failure_code) == ("failed", "no_card_on_file"), row
                top_up.status = "failed"
                model.suspend("no_card_on_file")
            elif model.card == DECLINED:
                assert (row.status, row.failure_code) == ("failed", "card_declined"), row
                top_up.status = "failed"
                model.suspend("card_declined")
            elif model.card in TIMEOUTS:
                assert (row.status, row.charge_begun) == ("pending", True), row
                top_up.charged_with = model.card
            else:
                assert row.status == "succeeded", row
                top_up.status = "succeeded"
                model.balance += top_up.amount

        def reconciler_pass(self) -> None:
            """What timed out is settled by asking the gateway: credited once if the charge
            was made, failed (charge_not_made, no suspension) if it never was."""
            # Every step runs to its end before the next, so nothing is being charged while
            # the reconciler looks: it may look at every pending payment at once.
            self.run(
                reconcile_pending(
                    world.app.state.database, world.app.state.gateway, worker.clock, timedelta(0)
                )
            )
            model, rows = self.model, self.rows()
            for deposit_id, top_up in model.top_ups.items():
                if top_up.status == "pending" and top_up.charged_with is not None:
                    top_up.status = self.reconciled(top_up.charged_with, rows[deposit_id])
                    if top_up.status == "succeeded":
                        model.balance += top_up.amount
            for deposit_id, card in list(model.pending_deposits.items()):
                status = self.reconciled(card, rows[deposit_id])
                model.deposits[deposit_id] = status
                del model.pending_deposits[deposit_id]
                if status == "succeeded":
                    model.balance += rows[deposit_id].amount

        @staticmethod
        def reconciled(card: str, row: Row) -> str:
            if card == TIMEOUT_CHARGED:
                assert row.status == "succeeded", row
            else:
                assert (row.status, row.failure_code) == ("failed", "charge_not_made"), row
            return row.status

        # What must hold after every step

        @invariant()
        def top_ups_are_as_modelled_and_within_the_limit(self) -> None:
            model, rows = self.model, self.automatic_rows()
            assert {i: r.status for i, r in rows.items()} == {
                i: t.status for i, t in model.top_ups.items()
            }
            assert len([r for r in rows.values() if r.status == "pending"]) <= 1
            month = sum(r.amount for r in rows.values() if r.status != "failed")
            if model.limits:
                assert month <= max(model.limits)
                never_lowered = model.limits == sorted(model.limits)
                if model.rule is not None and never_lowered:
                    assert month <= model.rule.monthly_limit
            else:
                assert month == 0

        @invariant()
        def books_balance(self) -> None:
            stored, total, lowest = self.run(
                world.db.fetchrow(
                    "SELECT (SELECT balance_cents FROM account_balance WHERE account_id = $1),"
                    " (SELECT coalesce(sum(amount_cents), 0) FROM ledger_entry"
                    "  WHERE account_id = $1),"
                    " (SELECT coalesce(min(balance_after_cents), 0) FROM ledger_entry"
                    "  WHERE account_id = $1)",
                    self.account_id,
                )
            )
            assert (stored or 0) == total == self.model.balance
            assert lowest >= 0
            balance = expect(self.call("GET", "/v1/finance/balance"), 200)["balance"]
            assert balance == money(self.model.balance)
            credits = dict(
                self.run(
                    world.db.fetch(
                        "SELECT deposit_id, count(*) FROM ledger_entry"
                        " WHERE account_id = $1 AND deposit_id IS NOT NULL GROUP BY deposit_id",
                        self.account_id,
                    )
                )
            )
            succeeded = [i for i, r in self.rows().items() if r.status == "succeeded"]
            assert credits == dict.fromkeys(succeeded, 1)

        @invariant()
        def rule_is_shown_as_modelled(self) -> None:
            shown = expect(self.call("GET", "/v1/finance/settings"), 200)["auto_top_up"]
            model = self.model
            if model.rule is None:
                assert shown is None
            else:
                assert shown == {
                    **model.rule.wire(),
                    "currency": "USD",
                    "status": model.status,
                    "suspended_reason": model.reason,
                }
            emails = self.run(
                world.db.fetchval(
                    "SELECT count(*) FROM outbox_message WHERE topic = 'email'"
                    " AND payload->>'kind' = 'auto_top_up_suspended'"
                    " AND payload->>'account_id' = $1",
                    self.account_id,
                )
            )
            assert emails == model.suspensions

        @invariant()
        def deposits_are_listed_with_their_source(self) -> None:
            listed = expect(self.call("GET", "/v1/finance/deposits", params={"limit": 100}), 200)
            assert {d["id"]: (d["status"], d["source"]) for d in listed["data"]} == {
                **{i: (s, "api") for i, s in self.model.deposits.items()},
                **{i: (t.status, "auto_top_up") for i, t in self.model.top_ups.items()},
            }

    return AutoTopUpMachine


def test_auto_top_up_state_machine(top_up_world: TopUpWorld) -> None:
    run_state_machine_as_test(
        machine_for(top_up_world),
        settings=settings(
            max_examples=20,
            stateful_step_count=18,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
