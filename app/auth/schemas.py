"""Bodies of tokens and API keys."""

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from app.auth.models import Integration, Role
from app.kit.schemas import RequestModel, ResponseModel, Timestamp


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
