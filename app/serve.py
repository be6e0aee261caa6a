"""`make run`: resolve the database (embedded when DATABASE_URL is unset), migrate, serve."""

import argparse
import os
import secrets
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from app.config import Settings, get_settings
from app.kit.db import start_embedded_postgres
from app.logs import configure_logging
from app.migrate import upgrade_to_head


def use_embedded_database_if_unset() -> Settings:
    """With no DATABASE_URL, start (or join) the embedded PostgreSQL and point DATABASE_URL at
    it; every process of one checkout (API, worker, CLI) then shares the same server."""
    settings = get_settings()
    if not settings.database_url:
        data_dir = Path(settings.data_dir)
        os.environ["DATABASE_URL"] = start_embedded_postgres(str(data_dir))
        # An embedded database is a developer's machine (the sandbox gateway is then fine).
        os.environ.setdefault("ENVIRONMENT", "development")
        print(f"Embedded PostgreSQL under {data_dir.resolve()}", file=sys.stderr)
        get_settings.cache_clear()
    return get_settings()


def prepare_environment() -> None:
    """Fill in what a developer's machine lacks, through the environment, so that every
    process started from here (uvicorn workers included) sees the same values."""
    settings = use_embedded_database_if_unset()
    data_dir = Path(settings.data_dir)
    if settings.gateway == "sandbox" and not settings.sandbox_url:
        from app.gateway.sandbox_server import SandboxServer

        # Lives in a daemon thread of this process, the parent of every uvicorn worker.
        os.environ["SANDBOX_URL"] = SandboxServer().start()
        print(f"Sandbox payment gateway at {os.environ['SANDBOX_URL']}")
    if not settings.secret_key:
        # A development secret, kept so that tokens survive a restart. Set SECRET_KEY in production.
        data_dir.mkdir(parents=True, exist_ok=True)
        key_file = data_dir / "secret_key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(48))
            key_file.chmod(0o600)
        os.environ["SECRET_KEY"] = key_file.read_text().strip()
    get_settings.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the billing API")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    args = parser.parse_args()
    configure_logging()
    try:
        prepare_environment()
    except ValidationError as error:
        for problem in error.errors():
            print(f"error: {problem['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        raise SystemExit(2) from None
    settings = get_settings()
    assert settings.database_url is not None
    upgrade_to_head(settings.database_url)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=settings.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        proxy_headers=True,
        log_config=None,
    )


if __name__ == "__main__":
    main()
