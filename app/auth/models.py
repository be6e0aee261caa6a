"""Tables of authentication: API keys (stored as digests) and the events that throttle logins."""

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.kit.db import Base, created_at_column


class ApiKey(Base):
    __tablename__ = "api_key"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'finance', 'user')", name="role"),
        CheckConstraint(
            "integration IS NULL OR integration IN ('azure_key_vault')", name="integration"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    integration: Mapped[str | None] = mapped_column(String(40))
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
        CheckConstraint("kind IN ('signup', 'login_failed', 'login_succeeded')", name="kind"),
        Index("ix_auth_event_kind_client_ip_created_at", "kind", "client_ip", "created_at"),
        Index("ix_auth_event_kind_email_created_at", "kind", "email", "created_at"),
        Index("ix_auth_event_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    email: Mapped[str | None] = mapped_column(String(320))
    client_ip: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_at_column()
