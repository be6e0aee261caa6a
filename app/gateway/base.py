"""The one interface the services use to verify cards, charge, refund and look up charges.

Provider SDK types never leave app/gateway/: adapters translate to these types and raise
these exceptions. Idempotency keys are built by the service from our own ids
(`deposit:{id}:charge`), never from a client's raw string.
"""

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class CardInput:
    """A card as typed by the holder. Lives only in memory, only until the gateway tokenises it."""

    number: str
    exp_month: int
    exp_year: int
    cvc: str
    holder_name: str

    def __repr__(self) -> str:  # never print the number or the CVC, even by accident
        return f"CardInput(last4={self.number[-4:]!r}, exp={self.exp_month}/{self.exp_year})"


@dataclass(frozen=True)
class SavedCard:
    """A card the gateway verified and tokenised: everything we may keep."""

    token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class Charge:
    charge_id: str
    status: Literal["succeeded", "declined"]
    amount_cents: int
    decline_code: str | None = None


@dataclass(frozen=True)
class Refund:
    refund_id: str
    charge_id: str
    amount_cents: int


class GatewayError(Exception):
    """Base of the gateway's failures."""


class CardDeclined(GatewayError):
    """A definite no: the card was refused (verification or charge). Nothing happened."""

    def __init__(self, decline_code: str) -> None:
        super().__init__(decline_code)
        self.decline_code = decline_code


class GatewayUnavailable(GatewayError):
    """No definite answer: a timeout, a 5xx, a refused connection. For a charge the outcome is
    unknown (it may have happened); ask again later with find_charge()."""


class Gateway(Protocol):
    async def save_card(
        self, card: CardInput | None = None, *, token: str | None = None
    ) -> SavedCard:
        """Verify a card (typed, or a token from client-side tokenisation) and return what to
        keep. Raises CardDeclined or GatewayUnavailable."""
        ...

    async def charge(
        self, card_token: str, amount_cents: int, *, idempotency_key: str, description: str
    ) -> Charge:
        """Charge a saved card in USD. A retry with the same idempotency key never charges
        twice. Returns a succeeded Charge; raises CardDeclined or GatewayUnavailable."""
        ...

    async def refund(self, charge_id: str, amount_cents: int, *, idempotency_key: str) -> Refund:
        """Refund (part of) a charge. Raises GatewayUnavailable when the outcome is unknown."""
        ...

    async def find_charge(self, idempotency_key: str) -> Charge | None:
        """The charge made under this idempotency key, or None if none happened.
        Raises GatewayUnavailable when the gateway cannot tell right now."""
        ...

    async def aclose(self) -> None: ...
