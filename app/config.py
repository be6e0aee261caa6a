"""Settings: every knob of the service, read from the environment (and an optional .env)."""

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Unset: the launcher starts an embedded PostgreSQL under DATA_DIR and sets it.
    database_url: str | None = None
    data_dir: str = ".data"
    # Per process, kept open. A unit holds its connection only while its statements run
    # (never across a gateway call), so 20 serve many more concurrent requests. No overflow
    # by default: an overflow connection is opened for one request and closed after it, so
    # a burst past the pool made every request pay for a new server process, just when the
    # service was busiest (make bench's open loop at 75 % of the maximum: p50 1.4 s with 10
    # overflow connections, 7.9 ms without). A request waits for a connection instead, and
    # is answered 503 with Retry-After if none comes free within DB_POOL_TIMEOUT_SECONDS.
    db_pool_size: int = 20
    db_max_overflow: int = 0
    db_pool_timeout_seconds: float = 10.0
    # DATABASE_URL is PgBouncer in transaction pooling mode: each transaction may run on
    # another server connection, so no prepared statement outlives its statement (a little
    # slower: every statement is parsed again). Off when the URL is PostgreSQL itself.
    database_pgbouncer: bool = False

    port: int = 8000
    # With several workers (`--workers`, WEB_CONCURRENCY): a worker whose event loop has not
    # run for this long is killed and replaced (its socket would keep taking connections).
    worker_timeout_seconds: float = 30.0
    # uvicorn's line per request. Off where the load balancer logs every request already:
    # each line is a write, about 2 % of a balance read's CPU.
    access_log: bool = True
    secret_key: str = Field(default="", repr=False)
    access_token_ttl_seconds: int = 900
    cors_origins: Annotated[list[str], NoDecode] = []

    signup_enabled: bool = True
    signup_limit_per_hour: int = 20
    login_failures_per_client: int = 5
    login_failures_per_email: int = 50
    # Failed logins one client address may make in the window, whatever the email: each
    # costs a password hash, so new emails are no way to keep the CPU busy.
    login_failures_per_address: int = 50
    login_window_seconds: int = 900

    # Unset: the sandbox, which accepts every test card, but only for development (the
    # embedded database, or ENVIRONMENT=development); elsewhere the service refuses to start.
    gateway: Literal["sandbox", "stripe"] | None = None
    environment: Literal["development", "production"] = "production"
    sandbox_url: str | None = None
    gateway_timeout_seconds: float = 5.0
    stripe_api_key: str = Field(default="", repr=False)
    stripe_api_base: str = "https://api.stripe.com"

    # Unset: emails are written to the log and kept as `logged`.
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "billing@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)
    smtp_timeout_seconds: float = 10.0

    reconcile_after_seconds: float = 60
    # The API process also runs the worker; false for API-only processes beside `billing worker`.
    run_worker: bool = True
    worker_poll_seconds: float = 0.5
    reconcile_interval_seconds: float = 2.0
    prune_interval_seconds: float = 3600.0
    outbox_batch_size: int = 50
    # A claimed message not marked within the lease is taken again by another worker.
    outbox_lease_seconds: float = 60.0
    outbox_max_attempts: int = 12
    outbox_retry_base_seconds: float = 5.0
    outbox_retry_max_seconds: float = 3600.0

    # Webhooks (SPEC §12). Hosts named here may be reached over http:// and on private
    # addresses (local development: 127.0.0.1, localhost).
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = []
    # Seconds to wait before each retry of a failed delivery: 5 s, 5 min, 30 min, 2 h, 5 h,
    # 10 h, then every 10 h, about 3 days in all (12 attempts).
    webhook_retry_schedule: Annotated[list[float], NoDecode] = [
        5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000, 36000,
    ]  # fmt: skip
    webhook_timeout_seconds: float = 10.0
    webhook_max_endpoints: int = 16
    webhook_disable_after_seconds: float = 5 * 24 * 3600.0
    webhook_secret_overlap_seconds: float = 24 * 3600.0
    webhook_event_retention_days: int = 30

    deposit_min_cents: int = 1_000
    deposit_max_cents: int = 10_000_000

    # The monthly billing run and its retries, as often as this (any number of workers).
    billing_interval_seconds: float = 300.0
    # Who issues invoices and receipts, as printed on their PDFs.
    vendor_name: str = "Example Hosting & Certificates Ltd"
    vendor_address: str = "1 Example Street, London EC1A 1AA, United Kingdom"

    @model_validator(mode="after")
    def _no_sandbox_by_accident(self) -> "Settings":
        if self.gateway is None:
            if self.database_url and self.environment != "development":
                raise ValueError(
                    "GATEWAY is not set. A deployment must name its payment gateway: "
                    "GATEWAY=stripe (with STRIPE_API_KEY), or GATEWAY=sandbox for a test "
                    "deployment that accepts every test card. ENVIRONMENT=development uses "
                    "the sandbox without being told."
                )
            self.gateway = "sandbox"
        return self

    @model_validator(mode="after")
    def _reconcile_after_the_gateway_gave_up(self) -> "Settings":
        # A payment younger than the gateway timeout may still be in flight: asking the
        # gateway about it then could fail a payment that is about to succeed.
        if self.reconcile_after_seconds <= self.gateway_timeout_seconds:
            raise ValueError("RECONCILE_AFTER_SECONDS must be longer than GATEWAY_TIMEOUT_SECONDS")
        return self

    @model_validator(mode="after")
    def _lease_outlasts_a_delivery(self) -> "Settings":
        # A webhook still being sent when its lease ends would be sent twice meanwhile.
        if self.outbox_lease_seconds <= self.webhook_timeout_seconds:
            raise ValueError("OUTBOX_LEASE_SECONDS must be longer than WEBHOOK_TIMEOUT_SECONDS")
        return self

    @field_validator(
        "cors_origins", "webhook_allowed_hosts", "webhook_retry_schedule", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("webhook_allowed_hosts", mode="after")
    @classmethod
    def _lower_case_hosts(cls, hosts: list[str]) -> list[str]:
        return [host.lower().strip("[]") for host in hosts]

    @field_validator("webhook_retry_schedule", mode="after")
    @classmethod
    def _positive_delays(cls, delays: list[float]) -> list[float]:
        if any(delay <= 0 for delay in delays):
            raise ValueError("WEBHOOK_RETRY_SCHEDULE holds seconds greater than zero")
        return delays


@lru_cache
def get_settings() -> Settings:
    return Settings()
