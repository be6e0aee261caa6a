"""Money: amounts are integer cents inside the service and two-decimal strings on the wire.

Input accepts a string ("12.50") or a JSON number (12.5) with at most two decimals.
Floats never touch an amount: a JSON number is read back through its shortest
repr, which is exactly what the client wrote for any value we accept.
"""

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

CURRENCY = "USD"
# A sanity bound, not a business limit: beyond it an amount is a mistake.
MAX_CENTS = 100_000_000_000  # 1,000,000,000.00
_AMOUNT_PATTERN = r"^-?[0-9]+\.[0-9]{2}$"


def parse_amount(value: object, *, allow_zero: bool = False) -> int:
    """The positive (or, with allow_zero, non-negative) amount in cents, or ValueError with a
    message a client can act on."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError('must be a decimal string such as "12.50" or a number')
    text = repr(value) if isinstance(value, float) else str(value).strip()
    if len(text) > 32:
        raise ValueError("is too large")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError('must be a decimal string such as "12.50" or a number') from None
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2:
        raise ValueError("must have at most two decimals")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise ValueError("must not be negative" if allow_zero else "must be greater than zero")
    cents = int(amount * 100)
    if cents > MAX_CENTS:
        raise ValueError("is too large")
    return cents


def format_amount(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), 100)
    return f"{sign}{whole}.{part:02d}"


def _validate_amount(value: Any) -> int:
    return parse_amount(value)


def _validate_amount_or_zero(value: Any) -> int:
    return parse_amount(value, allow_zero=True)


AmountIn = Annotated[
    int,
    BeforeValidator(_validate_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,2})?$"},
                {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000_000},
            ],
            "examples": ["500.00"],
        },
        mode="validation",
    ),
]
"""An amount a client sends: validated to cents."""

AmountOrZeroIn = Annotated[
    int,
    BeforeValidator(_validate_amount_or_zero),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,2})?$"},
                {"type": "number", "minimum": 0, "maximum": 1_000_000_000},
            ],
            "examples": ["100.00"],
        },
        mode="validation",
    ),
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
