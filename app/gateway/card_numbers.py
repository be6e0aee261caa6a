"""Card number checks shared by the API and the sandbox: Luhn, length and brand by prefix."""

from typing import Literal

Brand = Literal["visa", "mastercard", "amex", "discover", "unknown"]


def is_valid_card_number(number: str) -> bool:
    """Digits only, 12 to 19 of them, and the Luhn checksum holds."""
    if not number.isascii() or not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def card_brand(number: str) -> Brand:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"34", "37"}:
        return "amex"
    if "51" <= number[:2] <= "55" or "2221" <= number[:4] <= "2720":
        return "mastercard"
    if number.startswith(("6011", "65")):
        return "discover"
    return "unknown"
