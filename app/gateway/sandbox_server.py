"""The sandbox gateway: a small remote card gateway with SPEC §9's test cards, served over HTTP.

It keeps its state in memory and never keeps, logs or echoes a card number or CVC: a token
holds only what the card does (its test-card behaviour), its brand, last 4 digits and expiry.

    python -m app.gateway.sandbox_server --port 8090          # on its own
    url = SandboxServer(timeout_sleep_seconds=1.5).start()    # in process, on a free port
"""

import argparse
import asyncio
import contextlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import uvicorn
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from app.gateway.card_numbers import card_brand, is_valid_card_number

# Longer than any sensible client timeout, so that the two timeout cards really time out.
DEFAULT_TIMEOUT_SLEEP_SECONDS = 30.0

Outcome = Literal[
    "succeed",  # verification and charges succeed
    "decline",  # verification and charges are declined
    "processing_error",  # verification and charges fail with a 5xx, nothing recorded
    "decline_charges",  # saves fine, every charge is declined
    "charge_times_out_after_success",  # the charge is recorded, then the answer comes too late
    "charge_times_out_lost",  # the answer comes too late and nothing was recorded
]


@dataclass(frozen=True)
class SandboxCard:
    outcome: Outcome
    decline_code: str | None = None


TEST_CARDS: dict[str, SandboxCard] = {
    "4000000000000002": SandboxCard("decline", "generic_decline"),
    "4000000000009995": SandboxCard("decline", "insufficient_funds"),
    "4000000000000069": SandboxCard("decline", "expired_card"),
    "4000000000000119": SandboxCard("processing_error"),
    "4000000000000341": SandboxCard("decline_charges", "generic_decline"),
    "4000000000007775": SandboxCard("charge_times_out_after_success"),
    "4000000000008880": SandboxCard("charge_times_out_lost"),
}
_SUCCEEDS = SandboxCard("succeed")


class TokenRequest(BaseModel):
    number: str = Field(repr=False)
    exp_month: int
    exp_year: int
    cvc: str = Field(repr=False)
    holder_name: str = ""


class SaveCardRequest(BaseModel):
    token: str


class ChargeRequest(BaseModel):
    card: str
    amount_cents: Annotated[int, Field(gt=0)]
    description: str = ""


class RefundRequest(BaseModel):
    charge: str
    amount_cents: Annotated[int, Field(gt=0)]


@dataclass
class _Card:
    behaviour: SandboxCard
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    holder_name: str

    def summary(self) -> dict[str, Any]:
        return {
            "brand": self.brand,
            "last4": self.last4,
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
        }

    def is_expired(self) -> bool:
        today = datetime.now(UTC)
        return (self.exp_year, self.exp_month) < (today.year, today.month)


@dataclass
class _Charge:
    id: str
    idempotency_key: str
    card: str
    amount_cents: int
    description: str
    status: Literal["succeeded", "declined"]
    decline_code: str | None = None
    refunded_cents: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "card": self.card,
            "amount_cents": self.amount_cents,
            "description": self.description,
            "status": self.status,
            "decline_code": self.decline_code,
            "refunded_cents": self.refunded_cents,
        }

    def response(self) -> JSONResponse:
        if self.status == "succeeded":
            return JSONResponse(self.as_json())
        return _card_error(self.decline_code or "generic_decline", charge=self.as_json())


@dataclass(frozen=True)
class _Refund:
    id: str
    idempotency_key: str
    charge: str
    amount_cents: int

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "charge": self.charge, "amount_cents": self.amount_cents}


def _error(status: int, error_type: str, code: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": error_type, "code": code, **extra}}, status_code=status)


def _card_error(decline_code: str, **extra: Any) -> JSONResponse:
    return _error(402, "card_error", "card_declined", decline_code=decline_code, **extra)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


_Body = TypeVar("_Body", bound=BaseModel)


class _BadRequest(Exception):
    def __init__(self, response: JSONResponse) -> None:
        self.response = response


async def _parse(request: Request, model: type[_Body]) -> _Body:
    try:
        return model.model_validate(await request.json())
    except ValueError as exc:
        # Field names only: pydantic's own message would echo the input, card number included.
        fields = (
            sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
            if isinstance(exc, ValidationError)
            else []
        )
        raise _BadRequest(
            _error(400, "invalid_request_error", "invalid_body", fields=fields)
        ) from None


def _idempotency_key(request: Request) -> str:
    key = request.headers.get("idempotency-key", "").strip()
    if not key:
        raise _BadRequest(_error(400, "invalid_request_error", "idempotency_key_required"))
    return key


async def _sleep_while_connected(request: Request, seconds: float) -> None:
    """Answer too late, as a stuck gateway does; once the client has given up, waiting on
    changes nothing it can see, and would only hold up the server's shutdown."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            # The body is read already, so the next message is the client hanging up.
            while (await request.receive())["type"] != "http.disconnect":
                pass


class _SandboxGateway:
    """The gateway's state and endpoints. One event loop serves it, so no locks are needed."""

    def __init__(self, timeout_sleep_seconds: float) -> None:
        self.timeout_sleep_seconds = timeout_sleep_seconds
        self.tokens: dict[str, _Card] = {}  # single use: consumed by a successful save
        self.cards: dict[str, _Card] = {}
        self.charges: dict[str, _Charge] = {}
        self.charges_by_key: dict[str, _Charge] = {}
        self.refunds_by_key: dict[str, _Refund] = {}

    async def create_token(self, request: Request) -> JSONResponse:
        body = await _parse(request, TokenRequest)
        number = body.number.replace(" ", "")
        if not is_valid_card_number(number):
            return _card_error("incorrect_number")
        if not 1 <= body.exp_month <= 12 or not 2000 <= body.exp_year <= 2100:
            return _card_error("invalid_expiry")
        if not (body.cvc.isascii() and body.cvc.isdigit() and len(body.cvc) in (3, 4)):
            return _card_error("incorrect_cvc")
        card = _Card(
            behaviour=TEST_CARDS.get(number, _SUCCEEDS),
            brand=card_brand(number),
            last4=number[-4:],
            exp_month=body.exp_month,
            exp_year=body.exp_year,
            holder_name=body.holder_name,
        )
        token = _new_id("tok")
        self.tokens[token] = card
        return JSONResponse({"token": token, **card.summary()})

    async def save_card(self, request: Request) -> JSONResponse:
        body = await _parse(request, SaveCardRequest)
        card = self.tokens.get(body.token)
        if card is None:
            return _error(404, "invalid_request_error", "invalid_token")
        behaviour = card.behaviour
        if behaviour.outcome == "processing_error":
            return _error(500, "api_error", "processing_error")
        if behaviour.outcome == "decline":
            return _card_error(behaviour.decline_code or "generic_decline")
        if card.is_expired():
            return _card_error("expired_card")
        del self.tokens[body.token]
        card_id = _new_id("card")
        self.cards[card_id] = card
        return JSONResponse({"id": card_id, **card.summary()})

    async def create_charge(self, request: Request) -> JSONResponse:
        key = _idempotency_key(request)
        body = await _parse(request, ChargeRequest)
        previous = self.charges_by_key.get(key)
        if previous is not None:
            if (previous.card, previous.amount_cents) != (body.card, body.amount_cents):
                return _error(409, "idempotency_error", "idempotency_key_reused")
            return previous.response()
        # An unsaved token may be charged too (a one-off payment), as at real gateways.
        card = self.cards.get(body.card) or self.tokens.get(body.card)
        if card is None:
            return _error(404, "invalid_request_error", "invalid_token")
        behaviour = card.behaviour
        if behaviour.outcome == "processing_error":
            return _error(500, "api_error", "processing_error")
        if behaviour.outcome == "charge_times_out_lost":
            await _sleep_while_connected(request, self.timeout_sleep_seconds)
            return _error(504, "api_error", "timeout")
        if behaviour.outcome in ("decline", "decline_charges"):
            charge = self._record(key, body, "declined", behaviour.decline_code)
        elif card.is_expired():
            charge = self._record(key, body, "declined", "expired_card")
        else:
            charge = self._record(key, body, "succeeded")
        if behaviour.outcome == "charge_times_out_after_success":
            await _sleep_while_connected(request, self.timeout_sleep_seconds)
        return charge.response()

    def _record(
        self,
        key: str,
        body: ChargeRequest,
        status: Literal["succeeded", "declined"],
        decline_code: str | None = None,
    ) -> _Charge:
        charge = _Charge(
            id=_new_id("ch"),
            idempotency_key=key,
            card=body.card,
            amount_cents=body.amount_cents,
            description=body.description,
            status=status,
            decline_code=decline_code,
        )
        self.charges[charge.id] = charge
        self.charges_by_key[key] = charge
        return charge

    async def find_charge(self, request: Request) -> JSONResponse:
        key = request.query_params.get("idempotency_key", "")
        if not key:
            return _error(400, "invalid_request_error", "idempotency_key_required")
        charge = self.charges_by_key.get(key)
        if charge is None:
            return _error(404, "invalid_request_error", "no_such_charge")
        return JSONResponse(charge.as_json())

    async def create_refund(self, request: Request) -> JSONResponse:
        key = _idempotency_key(request)
        body = await _parse(request, RefundRequest)
        previous = self.refunds_by_key.get(key)
        if previous is not None:
            if (previous.charge, previous.amount_cents) != (body.charge, body.amount_cents):
                return _error(409, "idempotency_error", "idempotency_key_reused")
            return JSONResponse(previous.as_json())
        charge = self.charges.get(body.charge)
        if charge is None:
            return _error(404, "invalid_request_error", "no_such_charge")
        if charge.status != "succeeded":
            return _error(400, "invalid_request_error", "charge_not_refundable")
        if body.amount_cents > charge.amount_cents - charge.refunded_cents:
            return _error(400, "invalid_request_error", "amount_too_large")
        charge.refunded_cents += body.amount_cents
        refund = _Refund(_new_id("re"), key, charge.id, body.amount_cents)
        self.refunds_by_key[key] = refund
        return JSONResponse(refund.as_json())


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, _BadRequest)
    return exc.response


def create_sandbox_app(
    *, timeout_sleep_seconds: float = DEFAULT_TIMEOUT_SLEEP_SECONDS
) -> Starlette:
    gateway = _SandboxGateway(timeout_sleep_seconds)
    return Starlette(
        routes=[
            Route("/v1/tokens", gateway.create_token, methods=["POST"]),
            Route("/v1/cards", gateway.save_card, methods=["POST"]),
            Route("/v1/charges", gateway.create_charge, methods=["POST"]),
            Route("/v1/charges", gateway.find_charge, methods=["GET"]),
            Route("/v1/refunds", gateway.create_refund, methods=["POST"]),
        ],
        exception_handlers={_BadRequest: _bad_request},
    )


class BackgroundServer:
    """An ASGI app served by uvicorn from a daemon thread of this process (the sandbox for
    tests and `make run`, fake gateways in tests). start() returns the base URL once it
    accepts connections; port=0 picks a free port."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        if self._server is not None:
            return self.url
        # Binding here rather than in uvicorn tells us the port when port=0 asked for a free one.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,  # leave the host process's logging alone
            access_log=False,
            # A request sleeping past its client's timeout must not hold up stop().
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="gateway-server", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                sock.close()
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)
        self._server, self._thread = server, thread
        return self.url

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SandboxServer(BackgroundServer):
    """The sandbox gateway in a background thread: `url = SandboxServer().start()`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout_sleep_seconds: float = DEFAULT_TIMEOUT_SLEEP_SECONDS,
    ) -> None:
        app = create_sandbox_app(timeout_sleep_seconds=timeout_sleep_seconds)
        super().__init__(app, host=host, port=port)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the sandbox card gateway")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--timeout-sleep",
        type=float,
        default=DEFAULT_TIMEOUT_SLEEP_SECONDS,
        help="seconds the timeout test cards keep a charge waiting",
    )
    args = parser.parse_args()
    uvicorn.run(
        create_sandbox_app(timeout_sleep_seconds=args.timeout_sleep), host=args.host, port=args.port
    )


if __name__ == "__main__":
    main()
