"""Webhook secrets and signatures, by the Standard Webhooks specification (its reference
library signs): `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

An endpoint's secret is derived from a random seed stored with it and the service's
SECRET_KEY, so the database never holds a secret that signs (changing SECRET_KEY changes
every endpoint's secret, as it ends every access token).
"""

import hashlib
import hmac
import secrets
from base64 import b64encode
from datetime import datetime

from standardwebhooks.webhooks import Webhook

_SEED_BYTES = 32


def new_seed() -> bytes:
    return secrets.token_bytes(_SEED_BYTES)


def endpoint_secret(secret_key: str, seed: bytes) -> str:
    """`whsec_` and the base64 of 32 bytes that only this service can make from `seed`."""
    key = hmac.new(secret_key.encode(), b"webhook-secret:" + seed, hashlib.sha256).digest()
    return "whsec_" + b64encode(key).decode("ascii")


def signature_header(secrets_: list[str], message_id: str, at: datetime, body: str) -> str:
    """One `v1,…` signature per secret, space-separated: during a rotation's overlap a
    receiver holding either secret verifies the delivery."""
    return " ".join(Webhook(secret).sign(message_id, at, body) for secret in secrets_)
