"""HTTP endpoints of authentication: tokens, API keys and /v1/me."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import OAuth2PasswordRequestForm

from app.accounts.schemas import AccountOut, UserOut
from app.auth import service
from app.auth.principal import Authenticated, RequireAdmin
from app.auth.schemas import ApiKeyCreatedOut, ApiKeyCreateIn, ApiKeyOut, MeOut, TokenOut
from app.deps import ClientAddress, SettingsDep
from app.kit.pagination import Page, PageParams
from app.kit.routing import ApiRoute, Unit, secret_fields

router = APIRouter(prefix="/v1", tags=["auth"], route_class=ApiRoute)


@router.post(
    "/auth/token", response_model=TokenOut, summary="Get an access token (OAuth2 password flow)"
)
async def create_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    unit: Unit,
    settings: SettingsDep,
    client_ip: ClientAddress,
) -> TokenOut:
    return await service.issue_token(unit, settings, form.username, form.password, client_ip)


@router.get("/me", response_model=MeOut, summary="Who am I")
async def get_me(principal: Authenticated) -> MeOut:
    return MeOut(
        user=UserOut.model_validate(principal.user) if principal.user else None,
        api_key=ApiKeyOut.model_validate(principal.api_key) if principal.api_key else None,
        account=AccountOut.model_validate(principal.account),
        role=principal.role,
    )


@router.post(
    "/api-keys",
    status_code=201,
    response_model=ApiKeyCreatedOut,
    openapi_extra=secret_fields("key"),
    summary="Create an API key",
)
async def create_api_key(
    body: ApiKeyCreateIn, principal: RequireAdmin, unit: Unit
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
async def delete_api_key(key_id: str, principal: RequireAdmin, unit: Unit) -> Response:
    await service.revoke_api_key(unit, principal, key_id)
    return Response(status_code=204)
