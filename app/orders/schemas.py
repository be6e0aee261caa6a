"""Bodies of products and certificate orders, and the checks on the domain names they carry."""

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, field_validator

from app.finance.schemas import Currency
from app.kit.money import Amount
from app.kit.schemas import RequestModel, ResponseModel, Timestamp
from app.orders.models import CertificateOrder, OrderDraft, OrderStatus, ValidationLevel
from app.payment_methods.models import PaymentMethod

MAX_SANS = 250
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TLD = re.compile(r"^(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")


def _hostname(value: str) -> str:
    """A lower-cased DNS name of two or more labels; `*.` may only start it."""
    name = value.strip().lower().rstrip(".")
    labels = name.split(".")
    wildcard = labels[0] == "*"
    rest = labels[1:] if wildcard else labels
    if (
        len(name) > 253
        or len(rest) < 2
        or not all(_LABEL.match(label) for label in rest)
        or not _TLD.match(rest[-1])
    ):
        raise ValueError("must be a valid host name such as www.example.com")
    return name


# What _hostname takes (it lower-cases, and drops a final dot), as the schema states it.
_NAME = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?:[A-Za-z]{2,63}|[Xx][Nn]--(?:[A-Za-z0-9-]{0,58}[A-Za-z0-9]))\.?"
)
HOSTNAME_PATTERN = rf"^{_NAME}$"
WILDCARD_HOSTNAME_PATTERN = rf"^(?:\*\.)?{_NAME}$"
Hostname = Annotated[
    str,
    Field(max_length=253, pattern=WILDCARD_HOSTNAME_PATTERN),
    AfterValidator(_hostname),
]

# The catalogue, as the migrations seed it (tests/orders check that they agree): which
# products take wildcard names.
PRODUCT_IDS = ["ssl_dv", "ssl_dv_wildcard", "ssl_ev", "ssl_ov", "ssl_ov_wildcard"]
WILDCARD_PRODUCT_IDS = ["ssl_dv_wildcard", "ssl_ov_wildcard"]


def _names_of_the_product(schema: dict[str, Any]) -> None:
    """A wildcard name only for a wildcard product: in the schema, as the service checks."""
    plain = {"type": "string", "pattern": HOSTNAME_PATTERN}
    schema["if"] = {
        "properties": {"product_id": {"enum": WILDCARD_PRODUCT_IDS}},
        "required": ["product_id"],
    }
    schema["then"] = {}
    schema["examples"] = [
        {"product_id": "ssl_dv", "common_name": "www.example.com", "validity_years": 1},
        {
            "product_id": "ssl_ov_wildcard",
            "common_name": "*.example.com",
            "sans": ["example.com"],
            "validity_years": 2,
            "payment_method": "balance",
        },
    ]
    schema["else"] = {
        "properties": {"common_name": plain, "sans": {"type": "array", "items": plain}}
    }


class ProductOut(ResponseModel):
    id: str
    name: str
    validation: ValidationLevel
    wildcard: bool
    price_per_year: Amount
    price_per_extra_san: Amount
    currency: Currency = "USD"


class ProductList(ResponseModel):
    """The whole catalogue: `has_more` is always false (SPEC §1: every list carries it)."""

    data: list[ProductOut]
    has_more: bool = False


class OrderIn(RequestModel):
    model_config = ConfigDict(json_schema_extra=_names_of_the_product)

    product_id: Annotated[str, Field(json_schema_extra={"enum": PRODUCT_IDS})]
    common_name: Annotated[Hostname, Field(examples=["www.example.com"])]
    sans: Annotated[
        list[Hostname], Field(max_length=MAX_SANS, json_schema_extra={"uniqueItems": True})
    ] = []
    validity_years: Literal[1, 2, 3]
    payment_method: PaymentMethod | None = None

    @field_validator("sans")
    @classmethod
    def _no_duplicate_names(cls, sans: list[str], info: ValidationInfo) -> list[str]:
        # On the member itself (body.sans), not on the body: the common name comes first.
        seen = {info.data["common_name"]} if "common_name" in info.data else set()
        for name in sans:
            if name in seen:
                raise ValueError(f"{name} is named twice (sans may not repeat the common name)")
            seen.add(name)
        return sans


class OrderOut(ResponseModel):
    id: str
    product_id: str
    common_name: str
    sans: list[str]
    validity_years: int
    amount: Amount
    currency: Currency = "USD"
    payment_method: PaymentMethod
    status: OrderStatus
    failure_code: str | None
    decline_code: str | None
    created_at: Timestamp
    canceled_at: Timestamp | None


def order_out(order: CertificateOrder | OrderDraft) -> OrderOut:
    return OrderOut(
        id=order.id,
        product_id=order.product_id,
        common_name=order.common_name,
        sans=order.sans,
        validity_years=order.validity_years,
        amount=order.amount_cents,
        payment_method=order.payment_method,
        status=order.status,
        failure_code=order.failure_code,
        decline_code=order.decline_code,
        created_at=order.created_at,
        canceled_at=order.canceled_at,
    )
