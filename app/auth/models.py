"""Tables of authentication: API keys (stored as digests) and the events that throttle logins,
and the roles a caller may have."""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, created_at_column
from app.kit.states import StateColumn, sql_in


class Role(StrEnum):
    """What a user or an API key may do in its account."""

    ADMIN = "admin"
    FINANCE = "finance"
    USER = "user"


class Integration(StrEnum):
    """The integration an API key is for, with the rules that come with it."""

    AZURE_KEY_VAULT = "azure_key_vault"


class AuthEventKind(StrEnum):
    SIGNUP = "signup"
    LOGIN_FAILED = "login_failed"
    LOGIN_SUCCEEDED = "login_succeeded"


class ApiKey(Base):
    __tablename__ = "api_key"
    __table_args__ = (
        CheckConstraint(sql_in("role", Role), name="role"),
        CheckConstraint(
            f"integration IS NULL OR {sql_in('integration', Integration)}", name="integration"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(StateColumn(Role, 20))
    integration: Mapped[Integration | None] = mapped_column(StateColumn(Integration, 40))
    prefix: Mapped[str] = mapped_column(String(20))
    # SHA-256 of the secret: the secret has 256 random bits, so a fast digest is enough.
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = created_at_column()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuthEvent(Base):
    """A sign-up or a login attempt, counted by the throttles over a sliding window."""

    __tablename__ = "auth_event"
    __table_args__ = (
        CheckConstraint(sql_in("kind", AuthEventKind), name="kind"),
        Index("ix_auth_event_kind_client_ip_created_at", "kind", "client_ip", "created_at"),
        Index("ix_auth_event_kind_email_created_at", "kind", "email", "created_at"),
        Index("ix_auth_event_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[AuthEventKind] = mapped_column(StateColumn(AuthEventKind, 20))
    email: Mapped[str | None] = mapped_column(String(320))
    client_ip: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()
