"""The Gateway adapter for the sandbox gateway (app/gateway/sandbox_server.py), over HTTP."""

from typing import Any, NoReturn

import httpx

from app.gateway.base import (
    CardDeclined,
    CardInput,
    Charge,
    GatewayError,
    GatewayUnavailable,
    Refund,
    SavedCard,
)


class SandboxGateway:
    """Talks JSON to the sandbox. An unknown or already used token is
    CardDeclined("invalid_token"); a reused idempotency key with other parameters is a plain
    GatewayError (our bug, nothing happened)."""

    def __init__(self, base_url: str, timeout_seconds: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Created on first use so that it belongs to the event loop that uses it.
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base_url, timeout=httpx.Timeout(self.timeout_seconds)
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        try:
            response = await self._http().request(
                method, path, json=json, params=params, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise GatewayUnavailable("sandbox gateway timed out") from exc
        except httpx.HTTPError as exc:
            raise GatewayUnavailable(f"sandbox gateway unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise GatewayUnavailable(f"sandbox gateway answered {response.status_code}")
        return response

    async def save_card(
        self, card: CardInput | None = None, *, token: str | None = None
    ) -> SavedCard:
        if (card is None) == (token is None):
            raise ValueError("save_card takes a card or a token, not both")
        if card is not None:
            response = await self._request(
                "POST",
                "/v1/tokens",
                json={
                    "number": card.number,
                    "exp_month": card.exp_month,
                    "exp_year": card.exp_year,
                    "cvc": card.cvc,
                    "holder_name": card.holder_name,
                },
            )
            token = str(_body_or_raise(response)["token"])
        body = _body_or_raise(await self._request("POST", "/v1/cards", json={"token": token}))
        return SavedCard(
            token=body["id"],
            brand=body["brand"],
            last4=body["last4"],
            exp_month=body["exp_month"],
            exp_year=body["exp_year"],
        )

    async def charge(
        self, card_token: str, amount_cents: int, *, idempotency_key: str, description: str
    ) -> Charge:
        response = await self._request(
            "POST",
            "/v1/charges",
            json={"card": card_token, "amount_cents": amount_cents, "description": description},
            idempotency_key=idempotency_key,
        )
        return _charge(_body_or_raise(response))

    async def refund(self, charge_id: str, amount_cents: int, *, idempotency_key: str) -> Refund:
        response = await self._request(
            "POST",
            "/v1/refunds",
            json={"charge": charge_id, "amount_cents": amount_cents},
            idempotency_key=idempotency_key,
        )
        body = _body_or_raise(response)
        return Refund(
            refund_id=body["id"], charge_id=body["charge"], amount_cents=body["amount_cents"]
        )

    async def find_charge(self, idempotency_key: str) -> Charge | None:
        response = await self._request(
            "GET", "/v1/charges", params={"idempotency_key": idempotency_key}
        )
        if response.status_code == 404:
            return None
        return _charge(_body_or_raise(response))


def _charge(body: dict[str, Any]) -> Charge:
    return Charge(
        charge_id=body["id"],
        status=body["status"],
        amount_cents=body["amount_cents"],
        decline_code=body.get("decline_code"),
    )


def _body_or_raise(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise GatewayUnavailable(f"sandbox gateway sent no JSON object ({response.status_code})")
    if response.is_success:
        return body
    _raise_error(response.status_code, body.get("error") or {})


def _raise_error(status: int, error: dict[str, Any]) -> NoReturn:
    code = str(error.get("code") or "unknown")
    if status == 402:
        raise CardDeclined(str(error.get("decline_code") or code))
    if code == "invalid_token":
        raise CardDeclined("invalid_token")
    # Anything else is a request we should not have made (a reused key, a refund too large):
    # a definite answer, so not GatewayUnavailable.
    raise GatewayError(f"sandbox gateway refused the request: {status} {code}")
