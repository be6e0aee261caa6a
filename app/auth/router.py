"""HTTP endpoints of authentication: tokens, API keys and /v1/me."""

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import OAuth2PasswordRequestForm

from app.accounts.schemas import AccountOut, UserOut
from app.auth import service
from app.auth.principal import Authenticated, RequireAdmin
from app.auth.schemas import ApiKeyCreatedOut, ApiKeyCreateIn, ApiKeyOut, MeOut, TokenOut
from app.deps import ClientAddress, Session, SettingsDep
from app.idempotency import IdempotentRoute, secret_fields
from app.pagination import Page, PageParams

router = APIRouter(prefix="/v1", tags=["auth"], route_class=IdempotentRoute)


@router.post(
    "/auth/token", response_model=TokenOut, summary="Get an access token (OAuth2 password flow)"
)
async def create_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: Session,
    settings: SettingsDep,
    client_ip: ClientAddress,
) -> TokenOut:
    return await service.issue_token(session, settings, form.username, form.password, client_ip)


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
    body: ApiKeyCreateIn, principal: RequireAdmin, session: Session
) -> ApiKeyCreatedOut:
    api_key, secret = await service.create_api_key(session, principal, body)
    return ApiKeyCreatedOut.model_validate(
        {**ApiKeyOut.model_validate(api_key).model_dump(), "key": secret}
    )


@router.get(
    "/api-keys", response_model=Page[ApiKeyOut], summary="List API keys (never the secrets)"
)
async def list_api_keys(
    principal: RequireAdmin, session: Session, page: PageParams
) -> Page[ApiKeyOut]:
    keys, has_more = await service.list_api_keys(session, principal, page)
    return Page(data=[ApiKeyOut.model_validate(key) for key in keys], has_more=has_more)


@router.delete("/api-keys/{key_id}", status_code=204, summary="Revoke an API key at once")
async def delete_api_key(key_id: str, principal: RequireAdmin, session: Session) -> Response:
    await service.revoke_api_key(session, principal, key_id)
    return Response(status_code=204)
