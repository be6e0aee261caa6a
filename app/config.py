"""Settings: every knob of the service, read from the environment (and an optional .env)."""

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Unset: the launcher starts an embedded PostgreSQL under DATA_DIR and sets it.
    database_url: str | None = None
    data_dir: str = ".data"
    db_pool_size: int = 10
    db_max_overflow: int = 10
    # "queue" (a real pool) or "null" (a connection per checkout: for tests whose
    # requests run on short-lived event loops, such as schemathesis' ASGI client).
    db_pool: Literal["queue", "null"] = "queue"

    port: int = 8000
    secret_key: str = Field(default="", repr=False)
    access_token_ttl_seconds: int = 900
    cors_origins: Annotated[list[str], NoDecode] = []

    signup_enabled: bool = True
    signup_limit_per_hour: int = 20
    login_failures_per_client: int = 5
    login_failures_per_email: int = 50
    login_window_seconds: int = 900

    gateway: Literal["sandbox", "stripe"] = "sandbox"
    sandbox_url: str | None = None
    gateway_timeout_seconds: float = 5.0
    stripe_api_key: str = Field(default="", repr=False)
    stripe_api_base: str = "https://api.stripe.com"

    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "billing@localhost"

    reconcile_after_seconds: int = 60
    run_worker: bool = True

    deposit_min_cents: int = 1_000
    deposit_max_cents: int = 10_000_000

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
