"""Build the configured Gateway adapter from Settings."""

from app.config import Settings
from app.gateway.base import Gateway
from app.gateway.sandbox import SandboxGateway
from app.gateway.stripe_gateway import StripeGateway


def create_gateway(settings: Settings) -> Gateway:
    if settings.gateway == "stripe":
        if not settings.stripe_api_key:
            raise ValueError("GATEWAY=stripe needs STRIPE_API_KEY")
        return StripeGateway(
            settings.stripe_api_key,
            settings.stripe_api_base,
            timeout_seconds=settings.gateway_timeout_seconds,
        )
    if not settings.sandbox_url:
        raise ValueError("GATEWAY=sandbox needs SANDBOX_URL (the launcher starts one and sets it)")
    return SandboxGateway(settings.sandbox_url, timeout_seconds=settings.gateway_timeout_seconds)
