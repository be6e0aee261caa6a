"""StripeGateway, through the real stripe package, against a fake Stripe API over local HTTP."""

import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from app.gateway.base import CardDeclined, CardInput, GatewayUnavailable
from app.gateway.sandbox_server import BackgroundServer
from app.gateway.stripe_gateway import StripeGateway
from tests.gateway.conftest import CLIENT_TIMEOUT_SECONDS, SERVER_SLEEP_SECONDS
from tests.gateway.fake_stripe import FakeStripe, create_fake_stripe_app

API_KEY = "sk_test_fake"


@pytest.fixture(scope="module")
def fake_stripe() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe(sleep_seconds=SERVER_SLEEP_SECONDS)
    server = BackgroundServer(create_fake_stripe_app(fake))
    yield fake, server.start()
    server.stop()


@pytest.fixture
def fake(fake_stripe: tuple[FakeStripe, str]) -> FakeStripe:
    fake_stripe[0].requests.clear()
    return fake_stripe[0]


@pytest.fixture
async def stripe_gateway(fake_stripe: tuple[FakeStripe, str]) -> AsyncIterator[StripeGateway]:
    gateway = StripeGateway(API_KEY, fake_stripe[1], timeout_seconds=CLIENT_TIMEOUT_SECONDS)
    yield gateway
    await gateway.aclose()


def new_key() -> str:
    return f"deposit:{uuid.uuid4()}:charge"


def method_id_of(fake: FakeStripe) -> str:
    [setup] = fake.requests_to("POST", "/v1/setup_intents")
    return setup.form["payment_method"]


async def test_save_card_creates_method_customer_and_off_session_setup_intent(
    stripe_gateway: StripeGateway, fake: FakeStripe
) -> None:
    card = CardInput("5555555555554444", 12, 2030, "123", "Ada Admin")

    saved = await stripe_gateway.save_card(card)

    [method] = fake.requests_to("POST", "/v1/payment_methods")
    assert method.form["type"] == "card"
    assert method.form["card[number]"] == "5555555555554444"
    assert method.form["billing_details[name]"] == "Ada Admin"
    assert len(fake.requests_to("POST", "/v1/customers")) == 1
    [setup] = fake.requests_to("POST", "/v1/setup_intents")
    assert setup.form["confirm"] == "true"
    assert setup.form["usage"] == "off_session"
    assert setup.headers["authorization"] == f"Bearer {API_KEY}"
    customer_id, _, method_id = saved.token.partition(":")
    assert (setup.form["customer"], setup.form["payment_method"]) == (customer_id, method_id)
    assert (saved.brand, saved.last4, saved.exp_month, saved.exp_year) == (
        "mastercard",
        "4444",
        12,
        2030,
    )


async def test_save_card_from_stripe_token_makes_a_payment_method_from_it(
    stripe_gateway: StripeGateway, fake: FakeStripe
) -> None:
    saved = await stripe_gateway.save_card(token="tok_visa")

    [method] = fake.requests_to("POST", "/v1/payment_methods")
    assert method.form["card[token]"] == "tok_visa"
    assert "card[number]" not in method.form
    assert saved.token.endswith(":" + method_id_of(fake))


@pytest.mark.parametrize(
    ("method", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
    ],
)
async def test_save_declined_payment_method_raises_card_declined(
    stripe_gateway: StripeGateway, fake: FakeStripe, method: str, decline_code: str
) -> None:
    with pytest.raises(CardDeclined) as declined:
        await stripe_gateway.save_card(token=method)

    assert declined.value.decline_code == decline_code
    assert fake.requests_to("POST", "/v1/payment_methods") == []


async def test_save_unknown_payment_method_is_invalid_token(stripe_gateway: StripeGateway) -> None:
    with pytest.raises(CardDeclined) as declined:
        await stripe_gateway.save_card(token="pm_unknown")

    assert declined.value.decline_code == "invalid_token"


async def test_save_card_on_server_error_is_unavailable(stripe_gateway: StripeGateway) -> None:
    with pytest.raises(GatewayUnavailable):
        await stripe_gateway.save_card(token="pm_fake_server_error")


async def test_charge_sends_off_session_usd_intent_with_our_idempotency_key(
    stripe_gateway: StripeGateway, fake: FakeStripe
) -> None:
    key = new_key()

    charge = await stripe_gateway.charge(
        "cus_123:pm_card_visa", 1500, idempotency_key=key, description="Deposit"
    )
    retried = await stripe_gateway.charge(
        "cus_123:pm_card_visa", 1500, idempotency_key=key, description="Deposit"
    )

    first, second = fake.requests_to("POST", "/v1/payment_intents")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == key
    assert first.form == second.form
    assert first.form["amount"] == "1500"
    assert first.form["currency"] == "usd"
    assert first.form["confirm"] == "true"
    assert first.form["off_session"] == "true"
    assert first.form["customer"] == "cus_123"
    assert first.form["payment_method"] == "pm_card_visa"
    assert first.form["metadata[idempotency_key]"] == key
    assert (charge.status, charge.amount_cents) == ("succeeded", 1500)
    assert retried == charge
    assert await stripe_gateway.find_charge(key) == charge


async def test_charge_decline_raises_card_declined_and_is_found_declined(
    stripe_gateway: StripeGateway,
) -> None:
    key = new_key()

    with pytest.raises(CardDeclined) as declined:
        await stripe_gateway.charge(
            "cus_1:pm_card_chargeDeclinedInsufficientFunds",
            1500,
            idempotency_key=key,
            description="Deposit",
        )

    assert declined.value.decline_code == "insufficient_funds"
    found = await stripe_gateway.find_charge(key)
    assert found is not None
    assert (found.status, found.decline_code) == ("declined", "insufficient_funds")


async def test_charge_server_error_is_unavailable_and_not_retried_by_the_library(
    stripe_gateway: StripeGateway, fake: FakeStripe
) -> None:
    key = new_key()

    with pytest.raises(GatewayUnavailable):
        await stripe_gateway.charge(
            "cus_1:pm_fake_server_error", 1500, idempotency_key=key, description="Deposit"
        )

    assert len(fake.requests_to("POST", "/v1/payment_intents")) == 1
    assert await stripe_gateway.find_charge(key) is None


async def test_charge_timeout_is_unavailable_and_a_retry_sends_the_same_key(
    stripe_gateway: StripeGateway, fake: FakeStripe
) -> None:
    key = new_key()

    started = time.monotonic()
    with pytest.raises(GatewayUnavailable):
        await stripe_gateway.charge(
            "cus_1:pm_fake_timeout", 1500, idempotency_key=key, description="Deposit"
        )
    assert time.monotonic() - started < SERVER_SLEEP_SECONDS - CLIENT_TIMEOUT_SECONDS
    assert len(fake.requests_to("POST", "/v1/payment_intents")) == 1

    found = await stripe_gateway.find_charge(key)
    retried = await stripe_gateway.charge(
        "cus_1:pm_fake_timeout", 1500, idempotency_key=key, description="Deposit"
    )

    first, second = fake.requests_to("POST", "/v1/payment_intents")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == key
    assert found is not None
    assert found.status == "succeeded"
    assert retried == found


async def test_find_charge_searches_intents_by_key_metadata(
    stripe_gateway: StripeGateway, fake: FakeStripe
) -> None:
    key = new_key()

    assert await stripe_gateway.find_charge(key) is None

    [search] = fake.requests_to("GET", "/v1/payment_intents/search")
    assert search.query["query"] == f"metadata['idempotency_key']:'{key}'"


async def test_refund_sends_intent_amount_and_idempotency_key(
    stripe_gateway: StripeGateway, fake: FakeStripe
) -> None:
    key = new_key()

    refund = await stripe_gateway.refund("pi_123", 700, idempotency_key=key)

    [sent] = fake.requests_to("POST", "/v1/refunds")
    assert sent.headers["idempotency-key"] == key
    assert (sent.form["payment_intent"], sent.form["amount"]) == ("pi_123", "700")
    assert (refund.charge_id, refund.amount_cents) == ("pi_123", 700)
    assert refund.refund_id.startswith("re_")


async def test_unreachable_stripe_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = StripeGateway(API_KEY, f"http://127.0.0.1:{port}", CLIENT_TIMEOUT_SECONDS)

    with pytest.raises(GatewayUnavailable):
        await gateway.find_charge(new_key())
    await gateway.aclose()
