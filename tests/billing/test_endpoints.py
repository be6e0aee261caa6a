"""Plans, subscriptions and invoices through HTTP: shapes, roles, 404s, canceling (the service
ends at once), and the PDF receipts of invoices and deposits (SPEC §11)."""

import io
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from pypdf import PdfReader

from app.kit.clock import ManualClock
from tests.billing.conftest import (
    DECEMBER,
    JANUARY,
    JANUARY_1,
    NOVEMBER_14,
    bill,
    invoice_of,
    invoices_of,
    subscribe,
)
from tests.conftest import AddUser, SignUp
from tests.money import VISA, add_card, deposit, key
from tests.problems import assert_problem, error_fields


def pdf_text(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")
    reader = PdfReader(io.BytesIO(response.content))
    return "\n".join(page.extract_text() for page in reader.pages)


# Plans


async def test_plans_are_listed_with_a_monthly_price_for_every_role(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser
) -> None:
    user = await add_user(await sign_up(), "user")
    response = await client.get("/v1/plans", headers=user.headers)
    assert response.status_code == 200
    assert response.json()["has_more"] is False
    plans = {plan["id"]: plan for plan in response.json()["data"]}
    assert {"cloud_small", "cloud_large", "support"} <= set(plans)
    assert plans["cloud_small"]["monthly_price"] == "20.00"
    assert plans["cloud_large"]["monthly_price"] == "80.00"
    assert plans["support"]["monthly_price"] == "50.00"
    assert all(plan["currency"] == "USD" and plan["name"] for plan in plans.values())


# Subscriptions


async def test_admin_and_finance_subscribe_and_read_their_subscriptions(
    client: httpx.AsyncClient, sign_up: SignUp, add_user: AddUser, clock: ManualClock
) -> None:
    admin = await sign_up()
    finance = await add_user(admin, "finance")
    first = await subscribe(client, admin, "cloud_large")
    assert first["id"].startswith("sub_")
    spec = {"id", "plan_id", "monthly_price", "currency", "status", "started_at", "ended_at"}
    assert spec | {"created_at"} <= set(first)
    assert first["plan_id"] == "cloud_large"
    assert first["monthly_price"] == "80.00"
    assert first["currency"] == "USD"
    assert first["status"] == "active"
    assert first["started_at"] == "2026-11-14T10:00:00Z"
    assert first["ended_at"] is None
    assert first["created_at"].endswith("Z")
    # The part of November it runs in, billed on December 1st (in arrears).
    assert first["current_period_start"] == "2026-11-14T10:00:00Z"
    assert first["current_period_end"] == "2026-12-01T00:00:00Z"
    assert first["canceled_at"] is None
    assert "cancel_at_period_end" not in first
    # The same plan twice is two servers: allowed.
    second = await subscribe(client, finance, "cloud_large")

    listed = await client.get("/v1/subscriptions", headers=finance.headers)
    assert listed.status_code == 200
    assert [s["id"] for s in listed.json()["data"]] == [second["id"], first["id"]]
    page = await client.get("/v1/subscriptions", headers=admin.headers, params={"limit": 1})
    assert page.json()["has_more"] is True
    one = await client.get(f"/v1/subscriptions/{first['id']}", headers=finance.headers)
    assert one.json() == first


async def test_subscribing_to_an_unknown_plan_is_422_on_plan_id(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    for body in ({"plan_id": "cloud_huge"}, {"plan_id": ""}, {}):
        response = await client.post("/v1/subscriptions", headers=admin.headers, json=body)
        assert error_fields(assert_problem(response, 422, "validation_error")) == {"body.plan_id"}
    sneaky = await client.post(
        "/v1/subscriptions",
        headers=admin.headers,
        json={"plan_id": "support", "monthly_price": "0.01"},
    )
    assert "body.monthly_price" in error_fields(assert_problem(sneaky, 422, "validation_error"))
    listed = await client.get("/v1/subscriptions", headers=admin.headers)
    assert listed.json()["data"] == []


async def test_a_retried_subscribe_with_the_same_idempotency_key_subscribes_once(
    client: httpx.AsyncClient, sign_up: SignUp
) -> None:
    admin = await sign_up()
    headers = {**admin.headers, "Idempotency-Key": key()}
    first = await client.post("/v1/subscriptions", headers=headers, json={"plan_id": "support"})
    again = await client.post("/v1/subscriptions", headers=headers, json={"plan_id": "support"})
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    listed = await client.get("/v1/subscriptions", headers=admin.headers)
    assert len(listed.json()["data"]) == 1


async def test_delete_ends_the_subscription_now_and_twice_is_the_same(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up()
    await add_card(client, admin)
    subscription = await subscribe(client, admin, "support")
    other = await subscribe(client, admin, "cloud_small")
    clock.set(NOVEMBER_14 + timedelta(days=26, hours=2))  # 2026-12-10 12:00

    canceled = await client.delete(f"/v1/subscriptions/{subscription['id']}", headers=admin.headers)
    assert canceled.status_code == 200
    body = canceled.json()
    assert body == {
        **subscription,
        "status": "canceled",
        "ended_at": "2026-12-10T12:00:00Z",
        "canceled_at": "2026-12-10T12:00:00Z",
        "current_period_start": None,
        "current_period_end": None,
    }

    clock.advance(timedelta(days=3))
    again = await client.delete(f"/v1/subscriptions/{subscription['id']}", headers=admin.headers)
    assert again.status_code == 200
    assert again.json() == body
    read = await client.get(f"/v1/subscriptions/{subscription['id']}", headers=admin.headers)
    assert read.json() == body
    running = await client.get(f"/v1/subscriptions/{other['id']}", headers=admin.headers)
    assert (running.json()["status"], running.json()["ended_at"]) == ("active", None)

    # December bills the part it ran (2026-12-01 00:00 to 12-10 12:00: 9.5 days of 31, so
    # 5000 cents x 820,800 s / 2,678,400 s = 1532.26 cents -> 15.32), January nothing of it.
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    invoice = await invoice_of(client, admin)
    assert [(line["subscription_id"], line["amount"]) for line in invoice["lines"]] == [
        (subscription["id"], "15.32"),
        (other["id"], "20.00"),
    ]
    clock.set(JANUARY_1 + timedelta(days=31))
    await bill(app, clock, JANUARY, admin)
    january = await invoice_of(client, admin, JANUARY)
    assert [line["subscription_id"] for line in january["lines"]] == [other["id"]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/subscriptions"),
        ("GET", "/v1/subscriptions"),
        ("GET", "/v1/subscriptions/{subscription}"),
        ("DELETE", "/v1/subscriptions/{subscription}"),
        ("GET", "/v1/invoices"),
        ("GET", "/v1/invoices/{invoice}"),
        ("GET", "/v1/invoices/{invoice}.pdf"),
        ("GET", "/v1/finance/deposits/{deposit}.pdf"),
    ],
)
async def test_a_user_role_may_not_touch_subscriptions_invoices_or_receipts(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    add_user: AddUser,
    clock: ManualClock,
    method: str,
    path: str,
) -> None:
    admin = await sign_up()
    user = await add_user(admin, "user")
    await add_card(client, admin)
    subscription = await subscribe(client, admin)
    paid = await deposit(client, admin, "10.00")
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    invoice = await invoice_of(client, admin)
    url = path.format(
        subscription=subscription["id"], invoice=invoice["id"], deposit=paid.json()["id"]
    )
    body = {"plan_id": "support"} if method == "POST" else None
    response = await client.request(method, url, headers=user.headers, json=body)
    assert_problem(response, 403, "forbidden")
    unauthenticated = await client.request(method, url, json=body)
    assert_problem(unauthenticated, 401, "unauthenticated")


async def test_another_accounts_subscriptions_invoices_and_receipts_are_404(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    owner = await sign_up()
    stranger = await sign_up()
    await add_card(client, owner)
    subscription = await subscribe(client, owner)
    paid = await deposit(client, owner, "10.00")
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, owner)
    invoice = await invoice_of(client, owner)
    for method, url in [
        ("GET", f"/v1/subscriptions/{subscription['id']}"),
        ("DELETE", f"/v1/subscriptions/{subscription['id']}"),
        ("GET", f"/v1/invoices/{invoice['id']}"),
        ("GET", f"/v1/invoices/{invoice['id']}.pdf"),
        ("GET", f"/v1/finance/deposits/{paid.json()['id']}.pdf"),
        ("GET", "/v1/subscriptions/sub_doesnotexist"),
        ("GET", "/v1/invoices/inv_doesnotexist"),
        ("GET", "/v1/invoices/inv_doesnotexist.pdf"),
        ("GET", f"/v1/invoices/{invoice['id']}.pdf.pdf"),
    ]:
        assert_problem(
            await client.request(method, url, headers=stranger.headers), 404, "not_found"
        )
    assert await invoices_of(client, stranger) == []
    listed = await client.get(
        "/v1/invoices", headers=stranger.headers, params={"starting_after": invoice["id"]}
    )
    assert_problem(listed, 404, "not_found")
    still = await client.get(f"/v1/subscriptions/{subscription['id']}", headers=owner.headers)
    assert (still.json()["status"], still.json()["ended_at"]) == ("active", None)


# Invoices and their PDF


async def test_an_invoice_lists_its_lines_attempts_and_payment(
    app: FastAPI,
    client: httpx.AsyncClient,
    sign_up: SignUp,
    add_user: AddUser,
    clock: ManualClock,
) -> None:
    admin = await sign_up()
    finance = await add_user(admin, "finance")
    await add_card(client, admin)
    small = await subscribe(client, admin, "cloud_small")
    support = await subscribe(client, admin, "support")
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)

    [listed] = await invoices_of(client, admin)
    invoice = (await client.get(f"/v1/invoices/{listed['id']}", headers=finance.headers)).json()
    assert invoice == listed
    assert invoice["id"].startswith("inv_")
    assert invoice["period_start"] == "2026-12-01"
    assert invoice["period_end"] == "2026-12-31"
    assert invoice["status"] == "paid"
    assert invoice["total"] == "70.00"
    assert invoice["currency"] == "USD"
    assert [
        (line["subscription_id"], line["plan_id"], line["amount"]) for line in invoice["lines"]
    ] == [
        (small["id"], "cloud_small", "20.00"),
        (support["id"], "support", "50.00"),
    ]
    # Whole months: the monthly prices, and no dates on the lines.
    assert [line["description"] for line in invoice["lines"]] == [
        "Cloud server, small (2 vCPU, 4 GB) for December 2026",
        "Support plan (business hours, 4 h response) for December 2026",
    ]
    assert invoice["payment_method"] == "card"
    assert (invoice["card_brand"], invoice["card_last4"]) == ("visa", "4242")
    assert invoice["attempt_count"] == 1
    assert invoice["next_attempt_at"] is None
    assert invoice["issued_at"] == invoice["paid_at"] == "2027-01-01T00:05:00Z"
    assert invoice["attempts"] == [
        {
            "number": 1,
            "attempted_at": "2027-01-01T00:05:00Z",
            "payment_method": "card",
            "outcome": "succeeded",
            "decline_code": None,
            "failure_code": None,
            "card_brand": "visa",
            "card_last4": "4242",
        }
    ]


async def test_the_invoice_pdf_holds_the_number_total_billing_info_and_only_the_last4(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up(name="Ada Admin", company_name="Acme Ltd")
    billing = {
        # Core PDF fonts draw Latin-1 only: none of this may cost a 500.
        "company_name": "株式会社 Łódź “Cloud” GmbH",
        "contact_name": "Zoë Ångström",
        "address_line1": "1 Rue de l\u2019Église",
        "city": "Genève",
        "postal_code": "1204",
        "country": "CH",
        "tax_id": "CHE-123.456.789",
    }
    response = await client.put("/v1/account/billing", headers=admin.headers, json=billing)
    assert response.status_code == 200, response.text
    await add_card(client, admin, VISA)
    await subscribe(client, admin, "cloud_large")
    await subscribe(client, admin, "support")
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    invoice = await invoice_of(client, admin)

    response = await client.get(f"/v1/invoices/{invoice['id']}.pdf", headers=admin.headers)
    assert response.headers["content-disposition"] == f'inline; filename="{invoice["id"]}.pdf"'
    text = pdf_text(response)
    assert invoice["id"] in text
    assert "130.00 USD" in text
    assert "80.00" in text
    assert "50.00" in text
    assert "Receipt" in text
    assert "December 2026 (2026-12-01 to 2026-12-31)" in text
    assert "Paid on 2027-01-01" in text
    assert "Visa ending 4242" in text
    assert VISA not in text
    assert VISA not in response.content.decode("latin-1")
    assert app.state.settings.vendor_name in text
    assert "Zoë Ångström" in text
    assert "Genève" in text
    assert "Lódz" in text
    assert "CHE-123.456.789" in text


async def test_an_open_invoice_pdf_says_when_the_next_attempt_is(
    app: FastAPI, client: httpx.AsyncClient, sign_up: SignUp, clock: ManualClock
) -> None:
    admin = await sign_up(company_name=None)
    await subscribe(client, admin, "support")  # no card on file
    clock.set(JANUARY_1)
    await bill(app, clock, DECEMBER, admin)
    invoice = await invoice_of(client, admin)
    assert invoice["status"] == "open"
    assert invoice["attempts"][0]["failure_code"] == "no_card_on_file"
    text = pdf_text(await client.get(f"/v1/invoices/{invoice['id']}.pdf", headers=admin.headers))
    assert "Invoice" in text
    assert "50.00 USD" in text
    assert "next attempt on 2027-01-02" in text
    assert admin.email in text  # no billing information: the account's own


async def test_a_deposit_has_a_pdf_receipt(client: httpx.AsyncClient, sign_up: SignUp) -> None:
    admin = await sign_up()
    await add_card(client, admin, VISA)
    made = await deposit(client, admin, "250.00")
    assert made.status_code == 201
    deposit_id = made.json()["id"]
    response = await client.get(f"/v1/finance/deposits/{deposit_id}.pdf", headers=admin.headers)
    assert response.headers["content-disposition"] == f'inline; filename="{deposit_id}.pdf"'
    text = pdf_text(response)
    assert deposit_id in text
    assert "250.00 USD" in text
    assert "Succeeded" in text
    assert "Visa ending 4242" in text
    assert VISA not in text
    # The JSON of the deposit is still where it was.
    same = await client.get(f"/v1/finance/deposits/{deposit_id}", headers=admin.headers)
    assert same.json()["id"] == deposit_id
