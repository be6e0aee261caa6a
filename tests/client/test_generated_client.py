"""A client generated from the checked-in OpenAPI document by openapi-python-client (with
the one setting in openapi-python-client.yaml: PDFs as bytes) drives the README's
walk-through against a real server: sign up, token, API key, card, a deposit with an
Idempotency-Key (and its replay), an order, its cancellation, an invoice and its PDF. The
names a user of the client meets are the schema's operationIds."""

import importlib
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI

from app.billing.periods import next_period, period_of, period_start_at
from app.billing.run import bill_period
from app.kit.clock import ManualClock
from tests.conftest import PASSWORD, unique_email
from tests.money import key
from tests.processes import ServiceProcess, service_environment
from tests.smtp import SmtpServer

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def billing_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The generated package, imported from a temporary folder."""
    folder = tmp_path_factory.mktemp("generated")
    generated = subprocess.run(
        [
            str(GENERATOR),
            "generate",
            "--path",
            str(ROOT / "openapi" / "openapi.json"),
            "--config",
            str(HERE / "openapi-python-client.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(folder / "billing_client"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    # Every response is generated: none left out as unsupported.
    assert "response will be omitted" not in generated.stdout + generated.stderr
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("billing_client")
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.split(".")[0] == "billing_client"]:
            del sys.modules[name]


def _api(package: ModuleType, tag: str, operation: str) -> Any:
    return importlib.import_module(f"{package.__name__}.api.{tag}.{operation}")


def _models(package: ModuleType) -> Any:
    return importlib.import_module(f"{package.__name__}.models")


async def test_a_generated_client_walks_through_the_readme(
    app: FastAPI, smtp_server: SmtpServer, tmp_path: Path, billing_client: ModuleType
) -> None:
    models = _models(billing_client)
    server = await ServiceProcess.api(
        service_environment(app.state.settings, smtp_server, run_worker=False), tmp_path, "api"
    ).start()
    try:
        anonymous = billing_client.Client(base_url=server.url)
        email = unique_email("client")
        signed_up = await _api(billing_client, "account", "signup").asyncio(
            client=anonymous,
            body=models.SignupIn(email=email, password=PASSWORD, name="Ada", company_name="Acme"),
        )
        assert isinstance(signed_up, models.SignupOut), signed_up
        token = await _api(billing_client, "auth", "create_token").asyncio(
            client=anonymous, body=models.BodyCreateToken(username=email, password=PASSWORD)
        )
        assert isinstance(token, models.TokenOut), token
        user = billing_client.AuthenticatedClient(base_url=server.url, token=token.access_token)

        made = await _api(billing_client, "auth", "create_api_key").asyncio(
            client=user,
            body=models.ApiKeyCreateIn(name="erp", role=models.Role.ADMIN),
        )
        assert isinstance(made, models.ApiKeyCreatedOut), made
        integration = billing_client.AuthenticatedClient(
            base_url=server.url, token=made.key, prefix="", auth_header_name="X-API-Key"
        )

        card = await _api(billing_client, "card_on_file", "replace_card").asyncio(
            client=integration,
            body=models.CardDetailsIn(
                number="4242424242424242", exp_month=12, exp_year=2031, cvc="123",
                holder_name="Ada Lovelace",
            ),
        )  # fmt: skip
        assert (card.brand, card.last4) == ("visa", "4242")

        deposit_key = key()
        deposit = _api(billing_client, "finance", "create_deposit")
        deposited = await deposit.asyncio(
            client=integration, body=models.DepositIn(amount="500.00"), idempotency_key=deposit_key
        )
        assert (deposited.status, deposited.amount, deposited.balance_after) == (
            models.DepositStatus.SUCCEEDED,
            "500.00",
            "500.00",
        )
        replay = await deposit.asyncio_detailed(
            client=integration, body=models.DepositIn(amount="500.00"), idempotency_key=deposit_key
        )
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.parsed.id == deposited.id

        settings = await _api(billing_client, "finance", "update_finance_settings").asyncio(
            client=integration,
            body=models.FinanceSettingsPatch(
                balance_payments_enabled=True, default_payment_method=models.PaymentMethod.BALANCE
            ),
        )
        assert settings.default_payment_method == models.PaymentMethod.BALANCE

        ordered = await _api(billing_client, "orders", "create_order").asyncio(
            client=integration,
            body=models.OrderIn(
                product_id=models.OrderInProductId.SSL_DV,
                common_name="www.example.com",
                validity_years=models.OrderInValidityYears.VALUE_1,
            ),
            idempotency_key=key(),
        )
        assert (ordered.status, ordered.amount) == (models.OrderStatus.PAID, "49.00")
        canceled = await _api(billing_client, "orders", "cancel_order").asyncio(
            ordered.id, client=integration
        )
        assert canceled.status == models.OrderStatus.CANCELED
        balance = await _api(billing_client, "finance", "get_balance").asyncio(client=integration)
        assert balance.balance == "500.00"

        subscribed = await _api(billing_client, "billing", "create_subscription").asyncio(
            client=integration,
            body=models.SubscriptionIn(plan_id=models.SubscriptionInPlanId.CLOUD_SMALL),
        )
        assert subscribed.status == models.SubscriptionStatus.ACTIVE
        # The worker bills this month on the 1st of the next; here, a run as of then.
        month = period_of(datetime.now(UTC))
        then = ManualClock(period_start_at(next_period(month)).replace(tzinfo=UTC))
        report = await bill_period(
            app.state.database,
            app.state.gateway,
            then,
            month,
            account_ids=[signed_up.account.id],
        )
        assert report.invoiced == 1

        invoices = await _api(billing_client, "billing", "list_invoices").asyncio(
            client=integration
        )
        [invoice] = invoices.data
        assert invoice.status == models.InvoiceStatus.PAID
        pdf = await _api(billing_client, "billing", "get_invoice_pdf").asyncio(
            invoice.id, client=integration
        )
        assert pdf.payload.read().startswith(b"%PDF-")
        receipt = await _api(billing_client, "finance", "get_deposit_pdf").asyncio(
            deposited.id, client=integration
        )
        assert receipt.payload.read().startswith(b"%PDF-")
    finally:
        await server.stop()


def test_operation_names_are_the_schemas_own(billing_client: ModuleType) -> None:
    for tag, operation in (
        ("orders", "create_order"),
        ("billing", "list_invoices"),
        ("finance", "create_deposit"),
        ("webhooks", "create_webhook_endpoint"),
    ):
        module = _api(billing_client, tag, operation)
        assert callable(module.asyncio)
    # The required header is a required argument, not an optional one.
    create_order = _api(billing_client, "orders", "create_order")
    parameters = create_order.asyncio.__code__.co_varnames
    assert "idempotency_key" in parameters
    defaults = create_order.asyncio.__kwdefaults__ or {}
    assert "idempotency_key" not in defaults
