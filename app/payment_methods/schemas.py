"""Bodies of the card on file. A card number and CVC come in and are never sent back."""

from typing import Annotated

from pydantic import Field, StringConstraints

from app.kit.schemas import RequestModel, ResponseModel, Timestamp

HolderName = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class CardDetailsIn(RequestModel):
    number: Annotated[str, StringConstraints(min_length=1, max_length=40)] = Field(
        description="The card number (its check digit must hold); spaces and dashes are "
        "ignored. Never stored.",
        json_schema_extra={"format": "card-number"},
    )
    exp_month: Annotated[int, Field(ge=1, le=12)]
    exp_year: Annotated[int, Field(ge=2000, le=2100)]
    cvc: Annotated[str, StringConstraints(pattern=r"^[0-9]{3,4}$")] = Field(
        description="Never stored."
    )
    holder_name: HolderName


class CardTokenIn(RequestModel):
    token: Annotated[str, StringConstraints(min_length=1, max_length=200)] = Field(
        description="A token from the gateway's client-side tokenisation."
    )
    holder_name: HolderName | None = None


class CardOut(ResponseModel):
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    holder_name: str | None
    updated_at: Timestamp
