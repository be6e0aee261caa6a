"""What schemathesis needs to know of this API beyond its schema, loaded by the contract test
(SCHEMATHESIS_HOOKS=tests.contract.hooks): how to make values of the formats the schema
names, and the one rule of the protocol a schema cannot state (a new request takes a new
Idempotency-Key; reusing one for another body is 422 by design, SPEC §8)."""

import os
import re
import uuid
from typing import Any

import httpx
import phonenumbers
import schemathesis
from hypothesis import strategies as st

from app.main import IDEMPOTENCY_KEY_PATTERN

# Valid numbers of a few regions, in the forms a client sends them.
_PHONES = [
    phonenumbers.format_number(number, form)
    for region in ("US", "GB", "DE", "FR", "JP", "BR", "IN", "AU")
    if (number := phonenumbers.example_number(region)) is not None
    for form in (phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
]
schemathesis.openapi.format("phone", st.sampled_from(_PHONES))

_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """A valid Idempotency-Key made unique, as a client makes it; an invalid one is left as
    generated, for the service to refuse."""
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and _KEY.match(key):
        case.headers["Idempotency-Key"] = f"contract-{uuid.uuid4()}"


# The formats the schema names, made as the service takes them.
schemathesis.openapi.format(
    "password",
    st.text(
        alphabet="abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789-",
        min_size=16,
        max_size=40,
    ),
)
schemathesis.openapi.format(
    "https-url",
    st.from_regex(r"\Ahttps://hooks-[a-z0-9]{1,12}\.example\.invalid/[a-z0-9/]{0,30}\Z"),
)
schemathesis.openapi.format(
    "deposit-amount",
    st.integers(min_value=1_000, max_value=10_000_000).map(lambda c: f"{c // 100}.{c % 100:02d}"),
)
# Addresses at domains that take mail (the service refuses special-use ones: .test, .invalid).
schemathesis.openapi.format(
    "email", st.from_regex(r"\A[a-z0-9]{1,20}(\.[a-z0-9]{1,10})?@[a-z0-9]{1,20}\.(com|org|net)\Z")
)
# Test cards the sandbox saves (never its declining ones).
schemathesis.openapi.format(
    "card-number", st.sampled_from(["4242424242424242", "5555555555554444", "378282246310005"])
)


# The account pays from its balance for every case: a case that changed the payment
# settings (which the fuzzer does at random) is followed by putting them back, as each test
# of a suite starts from its fixture.
_PAYING_FROM_THE_BALANCE = {
    "balance_payments_enabled": True,
    "card_payments_enabled": True,
    "default_payment_method": "balance",
}


@schemathesis.hook
def after_call(ctx: Any, case: Any, response: Any) -> None:
    if case.operation.definition.raw.get("operationId") != "update_finance_settings":
        return
    if response.status_code == 200:
        restored = httpx.patch(
            f"{os.environ['CONTRACT_API_URL']}/v1/finance/settings",
            headers={"X-API-Key": os.environ["CONTRACT_API_KEY"]},
            json={**_PAYING_FROM_THE_BALANCE, "auto_top_up": None},
        )
        restored.raise_for_status()
