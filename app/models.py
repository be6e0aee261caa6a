"""Every table, imported in one place so Alembic and the app see the same metadata."""

from app.accounts.models import Account, BillingInfo, User
from app.auth.models import ApiKey, AuthEvent
from app.billing.models import Invoice, InvoiceAttempt, InvoiceLine, Plan, Subscription
from app.finance.models import AccountBalance, Deposit, LedgerEntry
from app.kit.idempotency import IdempotencyKey
from app.kit.outbox import OutboxMessage
from app.orders.models import CertificateOrder, Product
from app.payment_methods.models import Card, FinanceSettings
from app.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

__all__ = [
    "Account",
    "AccountBalance",
    "ApiKey",
    "AuthEvent",
    "BillingInfo",
    "Card",
    "CertificateOrder",
    "Deposit",
    "FinanceSettings",
    "IdempotencyKey",
    "Invoice",
    "InvoiceAttempt",
    "InvoiceLine",
    "LedgerEntry",
    "OutboxMessage",
    "Plan",
    "Product",
    "Subscription",
    "User",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
