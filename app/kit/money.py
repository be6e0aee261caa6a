"""Money: amounts are integer cents inside the service and two-decimal strings on the wire.

Input accepts a string of ASCII digits with an optional point and one or two decimals
("500", "500.5", "500.50") or a JSON number with at most two decimals; nothing else (a
sign, an exponent, spaces, separators, other scripts' digits). Floats never touch an
amount: a JSON number is read back through its shortest repr, which is exactly what the
client wrote for any value we accept.
"""

import re
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CURRENCY = "USD"
# A sanity bound, not a business limit: beyond it an amount is a mistake.
MAX_CENTS = 100_000_000_000  # 1,000,000,000.00
_AMOUNT_PATTERN = r"^-?[0-9]+\.[0-9]{2}$"


# ASCII digits, then optionally a point and one or two decimals: no sign, no exponent, no
# spaces or separators, no other script's digits (str.isdigit and Decimal accept those).
_AMOUNT_TEXT = re.compile(r"[0-9]+(\.[0-9]{1,2})?", re.ASCII)
_MAX_DIGITS = len(str(MAX_CENTS // 100))
_NOT_AN_AMOUNT = 'must be a string of digits with up to two decimals, such as "12.50", or a number'


def parse_amount(value: object, *, allow_zero: bool = False) -> int:
    """The positive (or, with allow_zero, non-negative) amount in cents, or ValueError with a
    message a client can act on."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(_NOT_AN_AMOUNT)
    if isinstance(value, str):
        text = value
    elif isinstance(value, float):
        # A JSON number arrives as a float: its shortest repr is what the client wrote, for
        # any value we accept ("1e+20" and "nan" are not).
        text = repr(value).removesuffix(".0") if value.is_integer() else repr(value)
    else:
        text = str(value)
    if text.startswith("-") and text[1:2].isdigit():
        raise ValueError("must not be negative" if allow_zero else "must be greater than zero")
    match = _AMOUNT_TEXT.fullmatch(text)
    if match is None:
        if re.fullmatch(r"[0-9]+\.[0-9]{3,}", text, re.ASCII):
            raise ValueError("must have at most two decimals")
        raise ValueError(_NOT_AN_AMOUNT)
    whole, _, part = text.partition(".")
    if len(whole.lstrip("0")) > _MAX_DIGITS:
        raise ValueError("is too large")
    cents = int(whole) * 100 + int(part.ljust(2, "0") or "0")
    if cents == 0 and not allow_zero:
        raise ValueError("must be greater than zero")
    if cents > MAX_CENTS:
        raise ValueError("is too large")
    return cents


def format_amount(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


def _input_schema(minimum: dict[str, int], example: str) -> WithJsonSchema:
    """What the OpenAPI document says of an input amount: the two forms parse_amount takes."""
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,2})?$"},
                {"type": "number", **minimum, "maximum": MAX_CENTS // 100},
            ],
            "examples": [example],
        },
        mode="validation",
    )


AmountIn = Annotated[
    int,
    BeforeValidator(parse_amount),
    _input_schema({"exclusiveMinimum": 0}, "500.00"),
]
"""An amount a client sends: validated to cents."""

# The deposit range of the default settings (DEPOSIT_MIN_CENTS, DEPOSIT_MAX_CENTS), as the
# schema states it; the service checks the configured one (amount_out_of_range).
DEPOSIT_RANGE_CENTS = (1_000, 10_000_000)

DepositAmountIn = Annotated[
    int,
    BeforeValidator(parse_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "deposit-amount"},
                {
                    "type": "number",
                    "minimum": DEPOSIT_RANGE_CENTS[0] // 100,
                    "maximum": DEPOSIT_RANGE_CENTS[1] // 100,
                    "multipleOf": 0.01,
                },
            ],
            "description": "10.00 to 100000.00 by default (a deployment may set its own "
            "range): a string of digits with up to two decimals, or a number.",
            "examples": ["500.00"],
        },
        mode="validation",
    ),
]
"""An amount deposited by card: validated to cents, then to the deposit range."""

AmountOrZeroIn = Annotated[
    int,
    BeforeValidator(lambda value: parse_amount(value, allow_zero=True)),
    _input_schema({"minimum": 0}, "100.00"),
]
"""An amount a client sends that may be zero (a threshold, say)."""

Amount = Annotated[
    int,
    PlainSerializer(format_amount, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": _AMOUNT_PATTERN, "examples": ["500.00"]},
        mode="serialization",
    ),
]
"""An amount the service returns: cents printed with exactly two decimals."""
