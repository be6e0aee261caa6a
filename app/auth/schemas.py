"""Bodies of tokens, API keys and /v1/me."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from app.accounts.schemas import AccountOut, Role, UserOut
from app.kit.schemas import RequestModel, ResponseModel, Timestamp

Integration = Literal["azure_key_vault"]


class TokenOut(ResponseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class ApiKeyCreateIn(RequestModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    role: Role
    integration: Integration | None = None


class ApiKeyOut(ResponseModel):
    id: str
    name: str
    role: Role
    integration: Integration | None
    prefix: str
    created_at: Timestamp
    last_used_at: Timestamp | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str | None = Field(
        description="The secret, shown in this response only: null when an Idempotency-Key "
        "replays the creation, because the secret is never stored."
    )


class MeOut(ResponseModel):
    user: UserOut | None
    api_key: ApiKeyOut | None
    account: AccountOut
    role: Role
