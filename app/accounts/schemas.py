"""Request and response bodies of sign-up, the account, billing information, users and
/v1/me."""

from typing import Annotated

import phonenumbers
import pycountry
from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from app.auth.models import Role
from app.auth.schemas import ApiKeyOut
from app.kit.schemas import PatchModel, RequestModel, ResponseModel, Timestamp

Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
OptionalText = Annotated[str | None, Field(default=None)]
# Longer than the policy allows: an over-long password gets `weak_password`, not a bare 422.
PasswordField = Annotated[
    str, StringConstraints(min_length=1, max_length=1024, strip_whitespace=False)
]
# A password being set: the schema states the policy (12 to 128 characters; also not a
# common password, nor the email), which the service checks and answers weak_password.
NewPassword = Annotated[
    PasswordField,
    Field(
        json_schema_extra={
            "minLength": 12,
            "maxLength": 128,
            "format": "password",
            # Not two characters or fewer, repeated (000000000000, abababababab).
            "not": {"pattern": r"^(.)(?:\1*|\1*(.)(?:\1|\2)*)$"},
        },
        description="12 to 128 characters, not a common password, not the email.",
    ),
]


def _lower_email(value: str) -> str:
    return value.lower()


Email = Annotated[EmailStr, AfterValidator(_lower_email)]


def _e164(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError(
            "must be a phone number in international form, e.g. +14155550123"
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


COUNTRY_CODES = sorted(country.alpha_2 for country in pycountry.countries)


def _country(value: str | None) -> str | None:
    if value is not None and value not in _COUNTRIES:
        raise ValueError("must be an ISO 3166-1 alpha-2 country code in capitals, e.g. US")
    return value


_COUNTRIES = frozenset(COUNTRY_CODES)

# International form: a + and the number, spaces, dashes and brackets allowed; stored as E.164.
Phone = Annotated[
    Annotated[
        str,
        Field(
            max_length=40,
            json_schema_extra={"format": "phone"},
            description="International form: + and the number (spaces, dashes, brackets).",
            examples=["+14155550123"],
        ),
    ]
    | None,
    AfterValidator(_e164),
]
Country = Annotated[
    Annotated[
        str,
        Field(
            json_schema_extra={"enum": COUNTRY_CODES},
            examples=["US"],
        ),
    ]
    | None,
    AfterValidator(_country),
]


class SignupIn(RequestModel):
    email: Email
    password: NewPassword
    name: Name
    company_name: Annotated[str | None, StringConstraints(max_length=200)] = None


class AccountOut(ResponseModel):
    id: str
    name: str
    company_name: str | None
    email: str
    phone: str | None
    created_at: Timestamp


class UserOut(ResponseModel):
    id: str
    email: str
    name: str
    role: Role
    created_at: Timestamp


class SignupOut(ResponseModel):
    account: AccountOut
    user: UserOut


class MeOut(ResponseModel):
    user: UserOut | None
    api_key: ApiKeyOut | None
    account: AccountOut
    role: Role


class AccountPatch(PatchModel):
    required_fields = frozenset({"name", "email"})

    name: Name | None = None
    company_name: Annotated[str | None, StringConstraints(max_length=200)] = None
    email: Email | None = None
    phone: Phone = None


class BillingInfoBody(RequestModel):
    contact_name: Annotated[str | None, StringConstraints(max_length=200)] = None
    company_name: Annotated[str | None, StringConstraints(max_length=200)] = None
    email: Email | None = None
    address_line1: Annotated[str | None, StringConstraints(max_length=200)] = None
    address_line2: Annotated[str | None, StringConstraints(max_length=200)] = None
    city: Annotated[str | None, StringConstraints(max_length=100)] = None
    region: Annotated[str | None, StringConstraints(max_length=100)] = None
    postal_code: Annotated[str | None, StringConstraints(max_length=20)] = None
    country: Country = None
    tax_id: Annotated[str | None, StringConstraints(max_length=50)] = None


class BillingInfoOut(ResponseModel):
    contact_name: str | None
    company_name: str | None
    email: str | None
    address_line1: str | None
    address_line2: str | None
    city: str | None
    region: str | None
    postal_code: str | None
    country: str | None
    tax_id: str | None


class PasswordChangeIn(RequestModel):
    current_password: PasswordField
    new_password: NewPassword
    new_password_confirmation: NewPassword


class UserCreateIn(RequestModel):
    email: Email
    name: Name
    role: Role
    password: NewPassword


class UserPatch(PatchModel):
    required_fields = frozenset({"name", "role"})

    name: Name | None = None
    role: Role | None = None
