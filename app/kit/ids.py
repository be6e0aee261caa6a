"""Prefixed opaque ids: a type prefix and 128 random bits, neither sequential nor guessable."""

import secrets

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str) -> str:
    number = secrets.randbits(128)
    chars = []
    for _ in range(25):  # 36**25 > 2**128
        number, digit = divmod(number, 36)
        chars.append(_ALPHABET[digit])
    return f"{prefix}_{''.join(chars)}"
