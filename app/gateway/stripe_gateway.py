"""The Gateway adapter for Stripe, through the official package's async client over HTTPX.

A saved card is a PaymentMethod attached to its own Customer by a confirmed off-session
SetupIntent; its token is "cus_…:pm_…" because an off-session charge needs both. A charge is a
PaymentIntent confirmed at once, sent with Stripe's Idempotency-Key = our key and carrying the
key in its metadata, which is how find_charge() looks it up.
"""

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import stripe
from stripe.params import PaymentIntentCreateParams

from app.gateway.base import (
    CardDeclined,
    CardInput,
    Charge,
    GatewayError,
    GatewayUnavailable,
    Refund,
    SavedCard,
)

KEY_METADATA = "idempotency_key"


@contextmanager
def _stripe_errors(*, missing_means_invalid_token: bool = False) -> Iterator[None]:
    """Turn Stripe's exceptions into ours; their messages stay out of ours."""
    try:
        yield
    except stripe.CardError as exc:
        code = (exc.error.decline_code if exc.error else None) or exc.code or "card_declined"
        raise CardDeclined(code) from exc
    except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
        if missing_means_invalid_token and exc.code == "resource_missing":
            raise CardDeclined("invalid_token") from exc
        # A definite refusal of a request we should not have made: nothing happened.
        raise GatewayError(f"stripe refused the request: {exc.code or type(exc).__name__}") from exc
    except stripe.StripeError as exc:
        # Timeouts, refused connections, 5xx, rate limits, and a key Stripe rejects: no answer
        # we can act on, so the caller keeps the payment pending and asks again later.
        raise GatewayUnavailable(f"stripe unavailable: {type(exc).__name__}") from exc


class StripeGateway:
    def __init__(
        self, api_key: str, api_base: str = "https://api.stripe.com", timeout_seconds: float = 5.0
    ) -> None:
        self.api_key = api_key
        self.api_base = api_base.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._http_client: stripe.HTTPXClient | None = None
        self._client: stripe.StripeClient | None = None
        # At DEBUG the stripe package logs request bodies, where card numbers travel.
        stripe_logger = logging.getLogger("stripe")
        if stripe_logger.getEffectiveLevel() < logging.INFO:
            stripe_logger.setLevel(logging.INFO)

    def __repr__(self) -> str:
        return f"StripeGateway(api_base={self.api_base!r})"

    def _stripe(self) -> stripe.StripeClient:
        # Created on first use so that its httpx client belongs to the loop that uses it.
        if self._client is None:
            self._http_client = stripe.HTTPXClient(timeout=self.timeout_seconds)
            self._client = stripe.StripeClient(
                self.api_key,
                base_addresses={"api": self.api_base},
                http_client=self._http_client,
                # The package's retries would stretch a timeout by their back-off; an unknown
                # outcome goes back to our caller, whose reconciler asks again by key.
                max_network_retries=0,
            )
        return self._client

    async def aclose(self) -> None:
        if self._http_client is not None:
            await self._http_client.close_async()  # type: ignore[no-untyped-call]
        self._http_client = self._client = None

    async def save_card(
        self, card: CardInput | None = None, *, token: str | None = None
    ) -> SavedCard:
        if (card is None) == (token is None):
            raise ValueError("save_card takes a card or a token, not both")
        client = self._stripe()
        with _stripe_errors(missing_means_invalid_token=True):
            if card is not None:
                method = await client.v1.payment_methods.create_async(
                    {
                        "type": "card",
                        "card": {
                            "number": card.number,
                            "exp_month": card.exp_month,
                            "exp_year": card.exp_year,
                            "cvc": card.cvc,
                        },
                        "billing_details": {"name": card.holder_name},
                    }
                )
                method_id = method.id
            elif token is not None and token.startswith("pm_"):
                method_id = token
            else:
                method = await client.v1.payment_methods.create_async(
                    {"type": "card", "card": {"token": token or ""}}
                )
                method_id = method.id
            customer = await client.v1.customers.create_async({})
            setup = await client.v1.setup_intents.create_async(
                {
                    "customer": customer.id,
                    "payment_method": method_id,
                    "confirm": True,
                    "usage": "off_session",
                    "allowed_payment_method_types": ["card"],
                    "expand": ["payment_method"],
                }
            )
        if setup.status != "succeeded":
            error = setup.last_setup_error
            raise CardDeclined(
                (error.decline_code or error.code if error else None)
                or ("authentication_required" if setup.status == "requires_action" else "")
                or "card_declined"
            )
        saved = setup.payment_method
        if not isinstance(saved, stripe.PaymentMethod) or saved.card is None:
            raise GatewayError("stripe returned a setup intent without its card")
        return SavedCard(
            token=f"{customer.id}:{saved.id}",
            brand=saved.card.brand,
            last4=saved.card.last4,
            exp_month=saved.card.exp_month,
            exp_year=saved.card.exp_year,
        )

    async def charge(
        self, card_token: str, amount_cents: int, *, idempotency_key: str, description: str
    ) -> Charge:
        customer, _, method = card_token.rpartition(":")
        params: PaymentIntentCreateParams = {
            "amount": amount_cents,
            "currency": "usd",
            "payment_method": method,
            "allowed_payment_method_types": ["card"],
            "confirm": True,
            "off_session": True,
            "description": description,
            "metadata": {KEY_METADATA: idempotency_key},
        }
        if customer:  # a bare "pm_…" token, from before cards had their own customer
            params["customer"] = customer
        with _stripe_errors(missing_means_invalid_token=True):
            intent = await self._stripe().v1.payment_intents.create_async(
                params, {"idempotency_key": idempotency_key}
            )
        charge = _charge(intent)
        if charge.status == "declined":
            raise CardDeclined(charge.decline_code or "card_declined")
        return charge

    async def refund(self, charge_id: str, amount_cents: int, *, idempotency_key: str) -> Refund:
        with _stripe_errors():
            refund = await self._stripe().v1.refunds.create_async(
                {
                    "payment_intent": charge_id,
                    "amount": amount_cents,
                    "metadata": {KEY_METADATA: idempotency_key},
                },
                {"idempotency_key": idempotency_key},
            )
        if refund.status in ("failed", "canceled"):
            raise GatewayError(f"stripe refund {refund.status}")
        return Refund(refund_id=refund.id, charge_id=charge_id, amount_cents=refund.amount)

    async def find_charge(self, idempotency_key: str) -> Charge | None:
        quoted = idempotency_key.replace("\\", "\\\\").replace("'", "\\'")
        with _stripe_errors():
            found = await self._stripe().v1.payment_intents.search_async(
                {"query": f"metadata['{KEY_METADATA}']:'{quoted}'", "limit": 10}
            )
        if not found.data:
            return None
        # Stripe forgets a key after 24 hours, so a late retry may have made a second intent.
        intent = next((i for i in found.data if i.status == "succeeded"), found.data[0])
        return _charge(intent)


def _charge(intent: stripe.PaymentIntent) -> Charge:
    if intent.status == "succeeded":
        return Charge(charge_id=intent.id, status="succeeded", amount_cents=intent.amount)
    if intent.status in ("processing", "requires_capture"):
        raise GatewayUnavailable(f"stripe payment intent still {intent.status}")
    error = intent.last_payment_error
    return Charge(
        charge_id=intent.id,
        status="declined",
        amount_cents=intent.amount,
        decline_code=(error.decline_code or error.code if error else None) or "card_declined",
    )
