"""Every table, imported in one place so Alembic and the app see the same metadata."""

from app.accounts.models import Account, BillingInfo, User
from app.auth.models import ApiKey, AuthEvent

__all__ = ["Account", "ApiKey", "AuthEvent", "BillingInfo", "User"]
