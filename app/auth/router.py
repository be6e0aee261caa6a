"""HTTP endpoints of authentication: tokens and API keys."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import OAuth2PasswordRequestForm

from app.auth import service
from app.auth.principal import RequireAccessAdmin, RequireAdmin
from app.auth.schemas import ApiKeyCreatedOut, ApiKeyCreateIn, ApiKeyOut, TokenOut
from app.deps import ClientAddress, SettingsDep
from app.kit.errors import errors
from app.kit.pagination import Page, PageParams
from app.kit.routing import ApiRoute, Unit, secret_fields

router = APIRouter(prefix="/v1", tags=["auth"], route_class=ApiRoute)


@router.post(
    "/auth/token",
    response_model=TokenOut,
    summary="Get an access token (OAuth2 password flow)",
    responses=errors({401: "invalid_credentials", 429: "too_many_attempts (Retry-After)"}),
)
async def create_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    unit: Unit,
    settings: SettingsDep,
    client_ip: ClientAddress,
) -> TokenOut:
    return await service.issue_token(unit, settings, form.username, form.password, client_ip)


@router.post(
    "/api-keys",
    status_code=201,
    response_model=ApiKeyCreatedOut,
    openapi_extra=secret_fields("key"),
    summary="Create an API key",
)
async def create_api_key(
    body: ApiKeyCreateIn, principal: RequireAccessAdmin, unit: Unit
) -> ApiKeyCreatedOut:
    api_key, secret = await service.create_api_key(unit, principal, body)
    return ApiKeyCreatedOut.model_validate(
        {**ApiKeyOut.model_validate(api_key).model_dump(), "key": secret}
    )


@router.get(
    "/api-keys", response_model=Page[ApiKeyOut], summary="List API keys (never the secrets)"
)
async def list_api_keys(principal: RequireAdmin, unit: Unit, page: PageParams) -> Page[ApiKeyOut]:
    keys, has_more = await service.list_api_keys(unit, principal, page)
    return Page(data=[ApiKeyOut.model_validate(key) for key in keys], has_more=has_more)


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke an API key at once")
async def delete_api_key(key_id: str, principal: RequireAccessAdmin, unit: Unit) -> Response:
    await service.revoke_api_key(unit, principal, key_id)
    return Response(status_code=204)
