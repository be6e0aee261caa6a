"""A fake Stripe API: just the endpoints StripeGateway calls, answering Stripe-shaped JSON.

Payment methods pick the outcome, after Stripe's own test ids (pm_card_visa,
pm_card_chargeDeclined…), plus two of ours: pm_fake_server_error (500) and pm_fake_timeout
(the intent is recorded, then the answer comes after `sleep_seconds`).
"""

import asyncio
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

DECLINES = {
    "pm_card_chargeDeclined": ("card_declined", "generic_decline"),
    "pm_card_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds"),
    # Stripe names an expired card in `code` and sends no decline_code.
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", None),
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str]
    query: dict[str, str]


@dataclass
class FakeStripe:
    sleep_seconds: float
    requests: list[RecordedRequest] = field(default_factory=list)
    payment_methods: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents_by_key: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if (r.method, r.path) == (method, path)]


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _card_error(code: str, decline_code: str | None, **extra: Any) -> JSONResponse:
    error = {"type": "card_error", "code": code, "message": "Your card was declined.", **extra}
    if decline_code:
        error["decline_code"] = decline_code
    return JSONResponse({"error": error}, status_code=402)


def _missing(param: str) -> JSONResponse:
    error = {"type": "invalid_request_error", "code": "resource_missing", "param": param}
    return JSONResponse({"error": {**error, "message": "No such payment_method"}}, 404)


def _server_error() -> JSONResponse:
    return JSONResponse({"error": {"type": "api_error", "message": "Something went wrong"}}, 500)


def _payment_method(pm_id: str, brand: str = "visa", last4: str = "4242") -> dict[str, Any]:
    card = {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2030}
    return {"id": pm_id, "object": "payment_method", "type": "card", "card": card}


def create_fake_stripe_app(fake: FakeStripe) -> Starlette:
    def method_for(pm_id: str) -> dict[str, Any] | None:
        if pm_id.startswith(("pm_card_", "pm_fake_")):
            return _payment_method(pm_id)
        return fake.payment_methods.get(pm_id)

    async def record(request: Request) -> RecordedRequest:
        form = await request.form()
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            headers=dict(request.headers),
            form={k: str(v) for k, v in form.items()},
            query=dict(request.query_params),
        )
        fake.requests.append(recorded)
        return recorded

    async def create_payment_method(request: Request) -> JSONResponse:
        form = (await record(request)).form
        if "card[token]" in form:
            method = _payment_method(_id("pm"))
        else:
            number = form["card[number]"]
            brand = "mastercard" if number.startswith("5") else "visa"
            method = _payment_method(_id("pm"), brand=brand, last4=number[-4:])
        fake.payment_methods[method["id"]] = method
        return JSONResponse(method)

    async def create_customer(request: Request) -> JSONResponse:
        await record(request)
        return JSONResponse({"id": _id("cus"), "object": "customer"})

    async def create_setup_intent(request: Request) -> JSONResponse:
        form = (await record(request)).form
        method = method_for(form["payment_method"])
        if method is None:
            return _missing("payment_method")
        if method["id"] in DECLINES:
            return _card_error(*DECLINES[method["id"]])
        if method["id"] == "pm_fake_server_error":
            return _server_error()
        return JSONResponse(
            {
                "id": _id("seti"),
                "object": "setup_intent",
                "status": "succeeded",
                "customer": form["customer"],
                "payment_method": method,
            }
        )

    async def create_payment_intent(request: Request) -> JSONResponse:
        form = (await record(request)).form
        key = request.headers["idempotency-key"]
        if key in fake.intents_by_key:  # Stripe replays the first answer
            status, body = fake.intents_by_key[key]
            return JSONResponse(body, status_code=status)
        pm_id = form["payment_method"]
        if method_for(pm_id) is None:
            return _missing("payment_method")
        if pm_id == "pm_fake_server_error":
            return _server_error()
        intent: dict[str, Any] = {
            "id": _id("pi"),
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "currency": form["currency"],
            "status": "succeeded",
            "metadata": {"idempotency_key": form["metadata[idempotency_key]"]},
            "last_payment_error": None,
        }
        response: tuple[int, dict[str, Any]] = (200, intent)
        if pm_id in DECLINES:
            code, decline_code = DECLINES[pm_id]
            error = {"type": "card_error", "code": code, "decline_code": decline_code}
            intent.update(status="requires_payment_method", last_payment_error=error)
            response = (402, {"error": {**error, "payment_intent": intent}})
        fake.intents_by_key[key] = response
        if pm_id == "pm_fake_timeout":
            await asyncio.sleep(fake.sleep_seconds)
        return JSONResponse(response[1], status_code=response[0])

    async def search_payment_intents(request: Request) -> JSONResponse:
        query = (await record(request)).query["query"]
        match = re.fullmatch(r"metadata\['idempotency_key'\]:'(.*)'", query)
        assert match, query
        intents = [
            body if status == 200 else body["error"]["payment_intent"]
            for status, body in fake.intents_by_key.values()
        ]
        found = [i for i in intents if i["metadata"]["idempotency_key"] == match[1]]
        return JSONResponse(
            {
                "object": "search_result",
                "url": "/v1/payment_intents/search",
                "has_more": False,
                "next_page": None,
                "data": found,
            }
        )

    async def create_refund(request: Request) -> JSONResponse:
        form = (await record(request)).form
        return JSONResponse(
            {
                "id": _id("re"),
                "object": "refund",
                "amount": int(form["amount"]),
                "payment_intent": form["payment_intent"],
                "status": "succeeded",
            }
        )

    return Starlette(
        routes=[
            Route("/v1/payment_methods", create_payment_method, methods=["POST"]),
            Route("/v1/customers", create_customer, methods=["POST"]),
            Route("/v1/setup_intents", create_setup_intent, methods=["POST"]),
            Route("/v1/payment_intents", create_payment_intent, methods=["POST"]),
            Route("/v1/payment_intents/search", search_payment_intents, methods=["GET"]),
            Route("/v1/refunds", create_refund, methods=["POST"]),
        ]
    )
