"""Rules of the card on file: checked locally, verified by the gateway, then kept (token only)."""

from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert

from app.auth.principal import Principal
from app.gateway.base import CardDeclined, CardInput, Gateway, GatewayUnavailable, SavedCard
from app.gateway.card_numbers import is_valid_card_number
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError
from app.payment_methods.models import Card, PaymentMethod, SuspendedReason
from app.payment_methods.schemas import CardDetailsIn, CardTokenIn
from app.payment_methods.settings import load_payment_settings, suspend_auto_top_up


def no_card_on_file(status: int = 404) -> ApiError:
    return ApiError("no_card_on_file", status, "There is no card on file.")


def check_card(body: CardDetailsIn, today: datetime) -> CardInput:
    digits = body.number.replace(" ", "").replace("-", "")
    if not is_valid_card_number(digits):
        raise ApiError("invalid_card_number", 422, "This is not a valid card number.")
    if (body.exp_year, body.exp_month) < (today.year, today.month):
        raise ApiError("card_expired", 422, "The card has expired.")
    return CardInput(digits, body.exp_month, body.exp_year, body.cvc, body.holder_name)


async def get_card(unit: UnitOfWork, principal: Principal) -> Card:
    card = await unit.session.get(Card, principal.account_id)
    if card is None:
        raise no_card_on_file()
    return card


async def replace_card(
    unit: UnitOfWork, gateway: Gateway, principal: Principal, body: CardDetailsIn | CardTokenIn
) -> Card:
    """Verify the new card through the gateway first; the old card stays until that succeeds."""
    try:
        if isinstance(body, CardDetailsIn):
            saved: SavedCard = await gateway.save_card(check_card(body, datetime.now(UTC)))
        else:
            saved = await gateway.save_card(token=body.token)
    except CardDeclined as declined:
        raise ApiError(
            "card_declined",
            402,
            "The card was declined.",
            extra={"decline_code": declined.decline_code},
        ) from None
    except GatewayUnavailable:
        raise ApiError(
            "gateway_unavailable",
            503,
            "The payment gateway is not answering; nothing was changed. Try again shortly.",
            headers={"Retry-After": "5"},
        ) from None
    values = {
        "gateway_token": saved.token,
        "brand": saved.brand,
        "last4": saved.last4,
        "exp_month": saved.exp_month,
        "exp_year": saved.exp_year,
        "holder_name": body.holder_name,
        "updated_at": datetime.now(UTC),
    }
    card: Card | None = await unit.session.scalar(
        insert(Card)
        .values(account_id=principal.account_id, **values)
        .on_conflict_do_update(index_elements=[Card.account_id], set_=values)
        .returning(Card),
        execution_options={"populate_existing": True},
    )
    assert card is not None
    return card


async def remove_card(unit: UnitOfWork, principal: Principal) -> None:
    settings = await load_payment_settings(unit, principal.account_id, principal.account.email)
    if settings.default_payment_method == PaymentMethod.CARD:
        raise ApiError(
            "card_is_default",
            409,
            "The card is the default payment method; choose another default first.",
        )
    removed = await unit.session.scalar(
        delete(Card).where(Card.account_id == principal.account_id).returning(Card.account_id)
    )
    if removed is None:
        raise no_card_on_file()
    await suspend_auto_top_up(unit, principal.account_id, SuspendedReason.NO_CARD_ON_FILE)
