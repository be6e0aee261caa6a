"""SPEC §13: the sandbox gateway accepts every test card, so it is used without being named
only for development (the embedded database, or ENVIRONMENT=development); a deployment with
a DATABASE_URL and no GATEWAY refuses to start and says why."""

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from app.config import Settings

URL = "postgresql://billing@db.internal:5432/billing"
SECRET = "s" * 40


def test_a_deployment_that_names_no_gateway_is_refused() -> None:
    with pytest.raises(ValidationError, match="GATEWAY is not set"):
        Settings(database_url=URL, secret_key=SECRET, _env_file=None)


@pytest.mark.parametrize(
    ("values", "gateway"),
    [
        ({"database_url": URL, "environment": "development"}, "sandbox"),
        ({"database_url": None}, "sandbox"),  # the embedded database: a developer's machine
        ({"database_url": URL, "gateway": "sandbox"}, "sandbox"),
        ({"database_url": URL, "gateway": "stripe"}, "stripe"),
    ],
)
def test_the_gateway_of_development_and_of_a_named_choice(
    values: dict[str, object], gateway: str
) -> None:
    settings = Settings(secret_key=SECRET, _env_file=None, **values)  # type: ignore[arg-type]
    assert settings.gateway == gateway


def test_the_service_refuses_to_start_without_a_gateway_and_says_why() -> None:
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"GATEWAY", "ENVIRONMENT", "SANDBOX_URL"}
    }
    environment.update(DATABASE_URL=URL, SECRET_KEY=SECRET)
    done = subprocess.run(
        [sys.executable, "-m", "app.serve"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "GATEWAY is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_webhook_settings_are_read_from_comma_separated_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WEBHOOK_ALLOWED_HOSTS", "127.0.0.1, LocalHost,[::1]")
    monkeypatch.setenv("WEBHOOK_RETRY_SCHEDULE", "5, 60,3600")
    settings = Settings(gateway="sandbox", secret_key=SECRET, _env_file=None)
    assert settings.webhook_allowed_hosts == ["127.0.0.1", "localhost", "::1"]
    assert settings.webhook_retry_schedule == [5, 60, 3600]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook_retry_schedule": "5,0,10"}, "greater than zero"),
        ({"outbox_lease_seconds": 10, "webhook_timeout_seconds": 10}, "OUTBOX_LEASE_SECONDS"),
    ],
)
def test_webhook_settings_that_would_misbehave_are_refused(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(gateway="sandbox", secret_key=SECRET, _env_file=None, **values)  # type: ignore[arg-type]


def test_the_default_retry_schedule_lasts_about_three_days_in_12_attempts() -> None:
    schedule = Settings(gateway="sandbox", secret_key=SECRET, _env_file=None).webhook_retry_schedule
    assert schedule[:6] == [5, 300, 1800, 7200, 18000, 36000]
    assert set(schedule[6:]) == {36000}
    assert len(schedule) + 1 == 12
    assert 2.5 * 86400 < sum(schedule) < 3.5 * 86400
