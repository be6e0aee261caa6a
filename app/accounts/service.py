"""Rules of the account: sign-up, account and billing information, passwords, users."""

from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.accounts.models import Account, BillingInfo, User
from app.accounts.passwords import check_password_policy
from app.accounts.schemas import (
    AccountPatch,
    BillingInfoBody,
    PasswordChangeIn,
    SignupIn,
    UserCreateIn,
    UserPatch,
)
from app.auth import throttle
from app.auth.models import Role
from app.auth.principal import Principal
from app.auth.security import hash_password, verify_password
from app.config import Settings
from app.kit.db import UnitOfWork
from app.kit.errors import ApiError, NotFound
from app.kit.ids import new_id
from app.kit.pagination import PageRequest, paginate


def _email_taken() -> ApiError:
    return ApiError("email_taken", 409, "A user with this email already exists.")


async def _ensure_email_free(unit: UnitOfWork, email: str) -> None:
    taken = await unit.session.scalar(
        select(User.id).where(User.email == email, User.deleted_at.is_(None))
    )
    if taken is not None:
        raise _email_taken()


async def signup(
    unit: UnitOfWork, settings: Settings, body: SignupIn, client_ip: str
) -> tuple[Account, User]:
    if not settings.signup_enabled:
        raise ApiError("signup_disabled", 403, "Sign-up is switched off on this service.")
    # Counted (and committed) before the work, so a burst counts like sign-ups one by one.
    await throttle.admit_signup(unit, settings, client_ip)
    return await create_account(unit, body)


async def create_account(unit: UnitOfWork, body: SignupIn) -> tuple[Account, User]:
    """An account and its first admin: sign-up after its throttle, or an operator's command."""
    check_password_policy(body.password, body.email)
    password_hash = await hash_password(body.password)
    account = Account(
        id=new_id("acct"),
        name=body.company_name or body.name,
        company_name=body.company_name,
        email=body.email,
    )
    user = User(
        id=new_id("usr"),
        account_id=account.id,
        email=body.email,
        name=body.name,
        role=Role.ADMIN,
        password_hash=password_hash,
        token_version=0,
    )
    session = unit.session
    try:
        await _ensure_email_free(unit, body.email)
        session.add(account)
        await session.flush()
        session.add(user)
        await session.flush()
        await session.refresh(account)
        await session.refresh(user)
    except IntegrityError:  # a concurrent sign-up with the same email won the race
        raise _email_taken() from None
    return account, user


async def update_account(unit: UnitOfWork, principal: Principal, body: AccountPatch) -> Account:
    account = await unit.session.get_one(
        Account, principal.account_id, with_for_update=True, populate_existing=True
    )
    for field in body.model_fields_set:
        setattr(account, field, getattr(body, field))
    await unit.session.flush()
    return account


async def get_billing_info(unit: UnitOfWork, principal: Principal) -> BillingInfoBody:
    info = await unit.session.get(BillingInfo, principal.account_id)
    if info is None:
        return BillingInfoBody()
    return BillingInfoBody.model_validate(info, from_attributes=True)


async def replace_billing_info(
    unit: UnitOfWork, principal: Principal, body: BillingInfoBody
) -> BillingInfoBody:
    await unit.session.merge(BillingInfo(account_id=principal.account_id, **body.model_dump()))
    await unit.session.flush()
    return body


async def change_password(
    unit: UnitOfWork,
    settings: Settings,
    principal: Principal,
    body: PasswordChangeIn,
    client_ip: str,
) -> None:
    user = principal.user
    assert user is not None  # RequireSignedInUser
    if body.new_password != body.new_password_confirmation:
        raise ApiError(
            "password_confirmation_mismatch", 422, "The new password and its confirmation differ."
        )
    password_hash = await unit.session.scalar(select(User.password_hash).where(User.id == user.id))
    # A stolen token must not become a way to guess the password: the login's throttle,
    # counted (and committed) before the hash.
    attempt = await throttle.admit_login(unit, settings, user.email, client_ip)
    if password_hash is None or not await verify_password(body.current_password, password_hash):
        raise ApiError("invalid_current_password", 400, "The current password is not correct.")
    await throttle.login_succeeded(unit, attempt)
    check_password_policy(body.new_password, user.email)
    new_hash = await hash_password(body.new_password)
    await unit.session.execute(
        update(User)
        .where(User.id == user.id)
        .values(password_hash=new_hash, token_version=User.token_version + 1)
    )


# Users of an account. Changes that could leave the account without an admin lock the
# account row first, so two admins demoting each other at once cannot both succeed.


async def list_users(
    unit: UnitOfWork, principal: Principal, page: PageRequest
) -> tuple[list[User], bool]:
    query = select(User).where(User.account_id == principal.account_id, User.deleted_at.is_(None))
    return await paginate(unit, query, User, page)


async def get_user(unit: UnitOfWork, principal: Principal, user_id: str) -> User:
    return await _load_user(unit, principal, user_id)


async def _load_user(unit: UnitOfWork, principal: Principal, user_id: str) -> User:
    user = await unit.session.scalar(
        select(User)
        .where(
            User.id == user_id,
            User.account_id == principal.account_id,
            User.deleted_at.is_(None),
        )
        # The caller's own row may sit in the identity map from authentication: read it fresh.
        .execution_options(populate_existing=True)
    )
    if user is None:
        raise NotFound("user")
    return user


async def create_user(unit: UnitOfWork, principal: Principal, body: UserCreateIn) -> User:
    check_password_policy(body.password, body.email)
    user = User(
        id=new_id("usr"),
        account_id=principal.account_id,
        email=body.email,
        name=body.name,
        role=body.role,
        password_hash=await hash_password(body.password),
        token_version=0,
    )
    try:
        await _ensure_email_free(unit, body.email)
        unit.session.add(user)
        await unit.session.flush()
        await unit.session.refresh(user)
    except IntegrityError:
        raise _email_taken() from None
    return user


async def _other_admins(unit: UnitOfWork, account_id: str, user_id: str) -> int:
    count = await unit.session.scalar(
        select(func.count()).where(
            User.account_id == account_id,
            User.role == Role.ADMIN,
            User.deleted_at.is_(None),
            User.id != user_id,
        )
    )
    return count or 0


def _last_admin() -> ApiError:
    return ApiError("last_admin", 409, "The account's last admin cannot be removed or demoted.")


async def update_user(
    unit: UnitOfWork, principal: Principal, user_id: str, body: UserPatch
) -> User:
    await unit.session.get_one(Account, principal.account_id, with_for_update=True)
    user = await _load_user(unit, principal, user_id)
    demoted = body.role is not None and body.role != Role.ADMIN and user.role == Role.ADMIN
    if demoted and await _other_admins(unit, principal.account_id, user.id) == 0:
        raise _last_admin()
    for field in body.model_fields_set:
        setattr(user, field, getattr(body, field))
    await unit.session.flush()
    return user


async def delete_user(unit: UnitOfWork, principal: Principal, user_id: str) -> None:
    await unit.session.get_one(Account, principal.account_id, with_for_update=True)
    user = await _load_user(unit, principal, user_id)
    if user.role == Role.ADMIN and await _other_admins(unit, principal.account_id, user.id) == 0:
        raise _last_admin()
    user.deleted_at = datetime.now(UTC)
    await unit.session.flush()
