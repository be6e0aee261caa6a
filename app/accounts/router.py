"""HTTP endpoints of sign-up, the account, billing information, passwords, users and
/v1/me."""

from fastapi import APIRouter, Response

from app.accounts import service
from app.accounts.schemas import (
    AccountOut,
    AccountPatch,
    BillingInfoBody,
    BillingInfoOut,
    MeOut,
    PasswordChangeIn,
    SignupIn,
    SignupOut,
    UserCreateIn,
    UserOut,
    UserPatch,
)
from app.auth.principal import (
    Authenticated,
    RequireAccessAdmin,
    RequireAdmin,
    RequireMember,
    RequireSignedInUser,
)
from app.auth.schemas import ApiKeyOut
from app.deps import ClientAddress, SettingsDep
from app.kit.errors import errors
from app.kit.pagination import Page, PageParams
from app.kit.routing import ApiRoute, Unit

router = APIRouter(prefix="/v1", tags=["account"], route_class=ApiRoute)
# /v1/me keeps the "auth" tag it has always had in the schema.
me_router = APIRouter(prefix="/v1", tags=["auth"], route_class=ApiRoute)


@me_router.get("/me", response_model=MeOut, summary="Who am I")
async def get_me(principal: Authenticated) -> MeOut:
    return MeOut(
        user=UserOut.model_validate(principal.user) if principal.user else None,
        api_key=ApiKeyOut.model_validate(principal.api_key) if principal.api_key else None,
        account=AccountOut.model_validate(principal.account),
        role=principal.role,
    )


@router.post(
    "/signup",
    status_code=201,
    response_model=SignupOut,
    summary="Sign up: an account and its first admin",
    responses=errors(
        {
            403: "signup_disabled",
            409: "email_taken",
            422: "weak_password",
            429: "too_many_attempts (Retry-After)",
        }
    ),
)
async def signup(
    body: SignupIn, unit: Unit, settings: SettingsDep, client_ip: ClientAddress
) -> SignupOut:
    account, user = await service.signup(unit, settings, body, client_ip)
    return SignupOut(account=AccountOut.model_validate(account), user=UserOut.model_validate(user))


@router.get("/account", response_model=AccountOut, summary="The account information")
async def get_account(principal: RequireMember) -> AccountOut:
    return AccountOut.model_validate(principal.account)


@router.patch("/account", response_model=AccountOut, summary="Change the account information")
async def update_account(body: AccountPatch, principal: RequireAdmin, unit: Unit) -> AccountOut:
    return AccountOut.model_validate(await service.update_account(unit, principal, body))


@router.get("/account/billing", response_model=BillingInfoOut, summary="The billing information")
async def get_billing_info(principal: RequireMember, unit: Unit) -> BillingInfoOut:
    info = await service.get_billing_info(unit, principal)
    return BillingInfoOut.model_validate(info.model_dump())


@router.put(
    "/account/billing", response_model=BillingInfoOut, summary="Replace the billing information"
)
async def replace_billing_info(
    body: BillingInfoBody, principal: RequireAdmin, unit: Unit
) -> BillingInfoOut:
    info = await service.replace_billing_info(unit, principal, body)
    return BillingInfoOut.model_validate(info.model_dump())


@router.put(
    "/account/password",
    status_code=204,
    summary="Change your own password",
    responses=errors(
        {
            400: "invalid_current_password",
            422: "weak_password, password_confirmation_mismatch",
            429: "too_many_attempts (Retry-After)",
        }
    ),
)
async def change_password(
    body: PasswordChangeIn,
    principal: RequireSignedInUser,
    unit: Unit,
    settings: SettingsDep,
    client_ip: ClientAddress,
) -> Response:
    await service.change_password(unit, settings, principal, body, client_ip)
    return Response(status_code=204)


@router.post(
    "/users",
    status_code=201,
    response_model=UserOut,
    tags=["users"],
    summary="Add a user",
    responses=errors({409: "email_taken", 422: "weak_password"}),
)
async def create_user(body: UserCreateIn, principal: RequireAccessAdmin, unit: Unit) -> UserOut:
    return UserOut.model_validate(await service.create_user(unit, principal, body))


@router.get("/users", response_model=Page[UserOut], tags=["users"], summary="List users")
async def list_users(principal: RequireAdmin, unit: Unit, page: PageParams) -> Page[UserOut]:
    users, has_more = await service.list_users(unit, principal, page)
    return Page(data=[UserOut.model_validate(user) for user in users], has_more=has_more)


@router.get("/users/{user_id}", response_model=UserOut, tags=["users"], summary="A user")
async def get_user(user_id: str, principal: RequireAdmin, unit: Unit) -> UserOut:
    return UserOut.model_validate(await service.get_user(unit, principal, user_id))


@router.patch(
    "/users/{user_id}",
    response_model=UserOut,
    tags=["users"],
    summary="Rename a user or change their role",
    responses=errors({409: "last_admin"}),
)
async def update_user(
    user_id: str, body: UserPatch, principal: RequireAccessAdmin, unit: Unit
) -> UserOut:
    return UserOut.model_validate(await service.update_user(unit, principal, user_id, body))


@router.delete(
    "/users/{user_id}",
    status_code=204,
    tags=["users"],
    summary="Remove a user",
    responses=errors({409: "last_admin"}),
)
async def delete_user(user_id: str, principal: RequireAccessAdmin, unit: Unit) -> Response:
    await service.delete_user(unit, principal, user_id)
    return Response(status_code=204)
