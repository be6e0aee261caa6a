"""SandboxGateway against the sandbox server over real HTTP: every row of SPEC §9's test cards."""

import logging
import os
import socket
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from app.gateway.base import CardDeclined, CardInput, GatewayError, GatewayUnavailable
from app.gateway.sandbox import SandboxGateway
from tests.gateway.conftest import CLIENT_TIMEOUT_SECONDS, SERVER_SLEEP_SECONDS


def card(number: str, exp_year: int = 2030) -> CardInput:
    cvc = "1234" if number.startswith("3") else "123"
    return CardInput(number=number, exp_month=12, exp_year=exp_year, cvc=cvc, holder_name="Ada")


def new_key() -> str:
    return f"deposit:{uuid.uuid4()}:charge"


async def client_side_token(sandbox_url: str, number: str) -> str:
    """What a browser does: tokenise the card straight at the gateway."""
    async with httpx.AsyncClient(base_url=sandbox_url) as http:
        response = await http.post(
            "/v1/tokens",
            json={"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        )
    assert response.status_code == 200
    body = response.json()
    assert number not in response.text
    assert body["last4"] == number[-4:]
    return str(body["token"])


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "visa"),
        ("5555555555554444", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("2223003122003222", "mastercard"),
        ("4012888888881881", "visa"),
        ("3056930009020004", "unknown"),
    ],
)
async def test_save_card_that_succeeds_returns_brand_last4_and_expiry(
    sandbox: SandboxGateway, number: str, brand: str
) -> None:
    saved = await sandbox.save_card(card(number))

    assert (saved.brand, saved.last4, saved.exp_month, saved.exp_year) == (
        brand,
        number[-4:],
        12,
        2030,
    )
    assert saved.token.startswith("card_")
    assert number not in repr(saved)


@pytest.mark.parametrize(
    ("number", "decline_code"),
    [
        ("4000000000000002", "generic_decline"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
    ],
)
async def test_save_declined_card_raises_card_declined_with_its_code(
    sandbox: SandboxGateway, number: str, decline_code: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(CardDeclined) as declined:
        await sandbox.save_card(card(number))

    assert declined.value.decline_code == decline_code
    assert number not in str(declined.value)
    assert number not in caplog.text


@pytest.mark.parametrize(
    ("number", "decline_code"),
    [
        ("4000000000000002", "generic_decline"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
    ],
)
async def test_charge_of_declined_card_is_declined_and_recorded_as_declined(
    sandbox: SandboxGateway, sandbox_url: str, number: str, decline_code: str
) -> None:
    token = await client_side_token(sandbox_url, number)
    key = new_key()

    with pytest.raises(CardDeclined) as declined:
        await sandbox.charge(token, 1500, idempotency_key=key, description="deposit")

    assert declined.value.decline_code == decline_code
    found = await sandbox.find_charge(key)
    assert found is not None
    assert (found.status, found.decline_code, found.amount_cents) == (
        "declined",
        decline_code,
        1500,
    )


async def test_processing_error_card_fails_save_and_charge_as_unavailable(
    sandbox: SandboxGateway, sandbox_url: str
) -> None:
    with pytest.raises(GatewayUnavailable):
        await sandbox.save_card(card("4000000000000119"))

    token = await client_side_token(sandbox_url, "4000000000000119")
    key = new_key()
    with pytest.raises(GatewayUnavailable):
        await sandbox.charge(token, 1500, idempotency_key=key, description="deposit")
    assert await sandbox.find_charge(key) is None


async def test_card_0341_saves_but_every_charge_is_declined(sandbox: SandboxGateway) -> None:
    saved = await sandbox.save_card(card("4000000000000341"))
    key = new_key()

    for _ in range(2):  # the retry replays the same answer
        with pytest.raises(CardDeclined) as declined:
            await sandbox.charge(saved.token, 1500, idempotency_key=key, description="deposit")
        assert declined.value.decline_code == "generic_decline"
    with pytest.raises(CardDeclined):
        await sandbox.charge(saved.token, 1500, idempotency_key=new_key(), description="deposit")

    found = await sandbox.find_charge(key)
    assert found is not None
    assert found.status == "declined"


async def test_card_7775_charge_times_out_but_succeeded_at_the_gateway(
    sandbox: SandboxGateway,
) -> None:
    saved = await sandbox.save_card(card("4000000000007775"))
    key = new_key()

    started = time.monotonic()
    with pytest.raises(GatewayUnavailable):
        await sandbox.charge(saved.token, 2500, idempotency_key=key, description="deposit")
    # The adapter's own timeout fired, not the server's answer.
    assert time.monotonic() - started < SERVER_SLEEP_SECONDS - CLIENT_TIMEOUT_SECONDS

    found = await sandbox.find_charge(key)
    assert found is not None
    assert (found.status, found.amount_cents) == ("succeeded", 2500)
    # A retry under the same key gets the recorded charge at once: no second charge.
    retried = await sandbox.charge(saved.token, 2500, idempotency_key=key, description="deposit")
    assert retried == found


async def test_card_8880_charge_times_out_and_did_not_happen(sandbox: SandboxGateway) -> None:
    saved = await sandbox.save_card(card("4000000000008880"))
    key = new_key()

    started = time.monotonic()
    with pytest.raises(GatewayUnavailable):
        await sandbox.charge(saved.token, 2500, idempotency_key=key, description="deposit")
    assert time.monotonic() - started < SERVER_SLEEP_SECONDS - CLIENT_TIMEOUT_SECONDS

    assert await sandbox.find_charge(key) is None


async def test_charge_retried_with_same_key_is_charged_once(sandbox: SandboxGateway) -> None:
    saved = await sandbox.save_card(card("5555555555554444"))
    key = new_key()

    first = await sandbox.charge(saved.token, 4200, idempotency_key=key, description="deposit")
    again = await sandbox.charge(saved.token, 4200, idempotency_key=key, description="deposit")
    other = await sandbox.charge(saved.token, 4200, idempotency_key=new_key(), description="x")

    assert first.status == "succeeded"
    assert again == first
    assert other.charge_id != first.charge_id
    assert await sandbox.find_charge(key) == first


async def test_same_key_with_another_amount_is_refused_without_charging(
    sandbox: SandboxGateway,
) -> None:
    saved = await sandbox.save_card(card("4242424242424242"))
    key = new_key()
    first = await sandbox.charge(saved.token, 1000, idempotency_key=key, description="deposit")

    with pytest.raises(GatewayError) as refused:
        await sandbox.charge(saved.token, 2000, idempotency_key=key, description="deposit")

    assert not isinstance(refused.value, CardDeclined | GatewayUnavailable)
    assert await sandbox.find_charge(key) == first


async def test_find_charge_for_unknown_key_is_none(sandbox: SandboxGateway) -> None:
    assert await sandbox.find_charge(new_key()) is None


async def test_refunds_are_idempotent_and_bounded_by_the_charge(sandbox: SandboxGateway) -> None:
    saved = await sandbox.save_card(card("378282246310005"))
    charge = await sandbox.charge(saved.token, 5000, idempotency_key=new_key(), description="d")
    refund_key = new_key()

    partial = await sandbox.refund(charge.charge_id, 3000, idempotency_key=refund_key)
    replayed = await sandbox.refund(charge.charge_id, 3000, idempotency_key=refund_key)
    rest = await sandbox.refund(charge.charge_id, 2000, idempotency_key=new_key())

    assert (partial.charge_id, partial.amount_cents) == (charge.charge_id, 3000)
    assert replayed == partial
    assert rest.refund_id != partial.refund_id
    with pytest.raises(GatewayError):
        await sandbox.refund(charge.charge_id, 1, idempotency_key=new_key())


async def test_save_card_by_client_side_token_is_single_use(
    sandbox: SandboxGateway, sandbox_url: str
) -> None:
    token = await client_side_token(sandbox_url, "4242424242424242")

    saved = await sandbox.save_card(token=token)

    assert (saved.brand, saved.last4) == ("visa", "4242")
    with pytest.raises(CardDeclined) as reused:
        await sandbox.save_card(token=token)
    assert reused.value.decline_code == "invalid_token"


async def test_unknown_tokens_are_declined_as_invalid_token(sandbox: SandboxGateway) -> None:
    with pytest.raises(CardDeclined) as on_save:
        await sandbox.save_card(token="tok_nope")
    with pytest.raises(CardDeclined) as on_charge:
        await sandbox.charge("card_nope", 100, idempotency_key=new_key(), description="d")

    assert on_save.value.decline_code == on_charge.value.decline_code == "invalid_token"


@pytest.mark.parametrize(
    ("number", "exp_year", "decline_code"),
    [
        ("4242424242424241", 2030, "incorrect_number"),
        ("42424242", 2030, "incorrect_number"),
        ("4242424242424242", 2020, "expired_card"),
    ],
)
async def test_bad_card_details_are_declined(
    sandbox: SandboxGateway, number: str, exp_year: int, decline_code: str
) -> None:
    with pytest.raises(CardDeclined) as declined:
        await sandbox.save_card(card(number, exp_year=exp_year))

    assert declined.value.decline_code == decline_code


async def test_unreachable_gateway_is_unavailable() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gateway = SandboxGateway(f"http://127.0.0.1:{port}", timeout_seconds=CLIENT_TIMEOUT_SECONDS)

    with pytest.raises(GatewayUnavailable):
        await gateway.find_charge(new_key())
    await gateway.aclose()


def test_sandbox_runs_from_the_command_line() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "app.gateway.sandbox_server", "--port", str(port)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{port}/v1/charges", params={"idempotency_key": "none"}
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the sandbox did not start"
                time.sleep(0.1)
        assert response.status_code == 404
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_malformed_tokenisation_request_names_fields_without_echoing_them(
    sandbox_url: str,
) -> None:
    async with httpx.AsyncClient(base_url=sandbox_url) as http:
        response = await http.post(
            "/v1/tokens", json={"number": 4242424242424242, "exp_month": "soon", "cvc": "123"}
        )

    assert response.status_code == 400
    assert response.json()["error"]["fields"] == ["exp_month", "exp_year", "number"]
    assert "4242424242424242" not in response.text
