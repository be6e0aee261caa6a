"""Secrets: password hashing (argon2id), access tokens (JWT) and API key secrets."""

import hashlib
import secrets
import time
from dataclasses import dataclass

import anyio
import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

# OWASP's argon2id floor: 19 MiB of memory, two passes.
_hasher = PasswordHash((Argon2Hasher(memory_cost=19 * 1024, time_cost=2, parallelism=1),))
# Verified when the email is unknown, so a login takes about as long either way.
_DUMMY_HASH = _hasher.hash("no such user: an answer takes the same time")

API_KEY_PREFIX = "bk_"
_JWT_ALGORITHM = "HS256"


async def hash_password(password: str) -> str:
    # Argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    return await anyio.to_thread.run_sync(_hasher.hash, password)


async def verify_password(password: str, password_hash: str | None) -> bool:
    def verify() -> bool:
        return _hasher.verify(password, password_hash or _DUMMY_HASH) and password_hash is not None

    return await anyio.to_thread.run_sync(verify)


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    account_id: str
    token_version: int


def issue_access_token(claims: AccessClaims, secret: str, ttl_seconds: int) -> str:
    now = int(time.time())
    payload = {
        "sub": claims.user_id,
        "acct": claims.account_id,
        "ver": claims.token_version,
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(payload, secret, algorithm=_JWT_ALGORITHM)


def read_access_token(token: str, secret: str) -> AccessClaims | None:
    """The claims of a valid, unexpired token, or None."""
    try:
        payload = jwt.decode(
            token, secret, algorithms=[_JWT_ALGORITHM], options={"require": ["sub", "exp", "iat"]}
        )
        return AccessClaims(
            user_id=str(payload["sub"]),
            account_id=str(payload["acct"]),
            token_version=int(payload["ver"]),
        )
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None


def new_api_key_secret() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)  # 256 random bits


def api_key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_display_prefix(secret: str) -> str:
    """The start of a key, enough for a person to tell keys apart, too short to use."""
    return secret[:10]
