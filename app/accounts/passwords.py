"""The password policy: 12 to 128 characters, not a common password, not the email."""

import re
from functools import lru_cache
from pathlib import Path

from app.kit.errors import ApiError

MIN_LENGTH = 12
MAX_LENGTH = 128
_COMMON_FILE = Path(__file__).with_name("common_passwords.txt")


@lru_cache(maxsize=1)
def _common_passwords() -> frozenset[str]:
    lines = _COMMON_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line and not line.startswith("#"))


def _weak(reason: str) -> ApiError:
    return ApiError("weak_password", 422, reason)


def check_password_policy(password: str, email: str) -> None:
    if len(password) < MIN_LENGTH:
        raise _weak(f"Passwords need at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        raise _weak(f"Passwords may have at most {MAX_LENGTH} characters.")
    lowered = password.lower()
    email = email.lower()
    if lowered in (email, email.split("@", 1)[0]) or email.split("@", 1)[0] == lowered.rstrip(
        "0123456789!@#$%^&*.?"
    ):
        raise _weak("A password may not be your email address.")
    common = _common_passwords()
    # "baseball2024!!" is "baseball" with a suffix everyone tries first.
    stem = re.sub(r"[\d\W_]+$", "", lowered)
    if lowered in common or (stem and stem in common) or len(set(lowered)) <= 2:
        raise _weak("This password is too common; choose one that is hard to guess.")
