"""Prefixed opaque ids: a type prefix and 128 random bits (26 lower-case base32 characters),
neither sequential nor guessable."""

import base64
import secrets

# Every id, made here or by the database's new_id(): a type prefix and 26 base32 characters.
ID_PATTERN = r"^[a-z]{2,5}_[a-z2-7]{26}$"


def new_id(prefix: str) -> str:
    random = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return f"{prefix}_{random}"
