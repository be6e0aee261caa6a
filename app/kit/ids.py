"""Prefixed opaque ids: a type prefix and 128 random bits (26 lower-case base32 characters),
neither sequential nor guessable."""

import secrets

# Every id, made here or by the database's new_id(): a type prefix and 26 base32 characters.
ID_PATTERN = r"^[a-z]{2,5}_[a-z2-7]{26}$"

_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
# Two characters for each 10 bits: 13 look-ups make an id. `base64.b32encode` is Python on
# 3.11 (5 bytes at a time, then padding stripped and lowered): 3.8 against 2.2 µs an id, and
# a balance order makes three.
_PAIRS = [first + second for first in _ALPHABET for second in _ALPHABET]
_SHIFTS = range(120, -1, -10)


def new_id(prefix: str) -> str:
    # Base32 of the 128 bits as base64.b32encode writes them, lower case, without padding:
    # 25 characters and 3 bits, written last with two zero bits after them.
    bits = int.from_bytes(secrets.token_bytes(16), "big") << 2
    return prefix + "_" + "".join([_PAIRS[(bits >> shift) & 1023] for shift in _SHIFTS])
