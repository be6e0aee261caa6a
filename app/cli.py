"""Operator commands: `billing --help` (or `python -m app.cli --help`).

Each command reads the same environment as the API (DATABASE_URL, unset: the embedded
PostgreSQL under ./.data) and goes through the same services, so an adjustment is a ledger
entry like any other and a reconciliation settles exactly once however many run at once.
"""

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError

from app.accounts.schemas import SignupIn
from app.accounts.service import create_account as create_account_service
from app.billing.periods import parse_period
from app.billing.run import bill_period, collect_due
from app.config import Settings
from app.finance.service import adjust_balance as adjust_balance_service
from app.gateway.base import Gateway
from app.gateway.factory import create_gateway
from app.kit import outbox
from app.kit.clock import Clock, ManualClock, SystemClock
from app.kit.db import Database, create_engine
from app.kit.errors import ApiError
from app.kit.money import format_amount, parse_amount
from app.logs import configure_logging
from app.migrate import upgrade_to_head
from app.serve import use_embedded_database_if_unset
from app.worker.reconcile import list_pending, reconcile_pending
from app.worker.runner import Worker

cli = typer.Typer(
    help="Operator commands of the billing service.", no_args_is_help=True, add_completion=False
)

T = TypeVar("T")


def _settings(log_level: str = "WARNING") -> Settings:
    configure_logging(log_level)
    try:
        return use_embedded_database_if_unset()
    except ValidationError as error:
        for problem in error.errors():
            typer.echo(f"error: {problem['msg'].removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None


def _run(work: Callable[[Database], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run `work` with the database, and report a refused operation the way the API would,
    as its code and detail."""
    settings = settings or _settings()

    async def main() -> T:
        database = Database(create_engine(settings))
        try:
            return await work(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except ApiError as error:
        typer.echo(f"error: {error.code}: {error.detail}", err=True)
        raise typer.Exit(1) from None


def _gateway(settings: Settings) -> Gateway:
    if settings.gateway == "sandbox" and not settings.sandbox_url:
        typer.echo(
            "error: SANDBOX_URL is not set. Point it at the sandbox gateway the API charges "
            "through (`make run` prints its address), or the gateway's answers would be "
            "another sandbox's.",
            err=True,
        )
        raise typer.Exit(2)
    return create_gateway(settings)


@cli.command("create-account")
def create_account(
    email: Annotated[str, typer.Option(help="The first admin's email, also the account's.")],
    name: Annotated[str, typer.Option(help="The first admin's name.")],
    company: Annotated[str | None, typer.Option(help="The company name, if any.")] = None,
) -> None:
    """Create an account and its first admin (sign-up without its switch and throttle). The
    password is asked for, or read from BILLING_ADMIN_PASSWORD: never from the command line,
    where other users of the machine and the shell's history would see it."""
    password = os.environ.get("BILLING_ADMIN_PASSWORD") or typer.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    try:
        body = SignupIn(email=email, password=password, name=name, company_name=company)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            typer.echo(f"error: {field}: {problem['msg']}", err=True)
        raise typer.Exit(1) from None

    async def work(database: Database) -> None:
        account, user = await database.run(lambda unit: create_account_service(unit, body))
        typer.echo(f"account {account.id}\nadmin   {user.id} {user.email}")

    _run(work)


@cli.command("adjust-balance")
def adjust_balance(
    account_id: Annotated[str, typer.Argument(help="The account, acct_...")],
    amount: Annotated[
        str, typer.Option(help='Signed amount in USD: "25.00" credits, "-25.00" debits.')
    ],
    reason: Annotated[str, typer.Option(help="Why: kept in the ledger entry's description.")],
) -> None:
    """Credit or debit a balance with an `adjustment` ledger entry."""
    sign, digits = (-1, amount[1:]) if amount.startswith("-") else (1, amount.removeprefix("+"))
    try:
        cents = sign * parse_amount(digits)
    except ValueError as error:
        typer.echo(f"error: amount {error}", err=True)
        raise typer.Exit(1) from None
    if not reason.strip():
        typer.echo("error: give a reason", err=True)
        raise typer.Exit(1)

    async def work(database: Database) -> None:
        posting = await database.run(
            lambda unit: adjust_balance_service(unit, account_id, cents, reason.strip())
        )
        typer.echo(
            f"{posting.entry_id}: {format_amount(cents)} USD, "
            f"balance now {format_amount(posting.balance_after_cents)} USD"
        )

    _run(work)


@cli.command()
def reconcile(
    older_than: Annotated[
        float | None,
        typer.Option(
            help="Only payments pending longer (seconds); default RECONCILE_AFTER_SECONDS."
        ),
    ] = None,
) -> None:
    """Settle pending deposits, card orders, refunds and invoice attempts now, by asking the
    gateway."""
    settings = _settings()
    gateway = _gateway(settings)
    age = settings.reconcile_after_seconds if older_than is None else older_than

    async def work(database: Database) -> None:
        try:
            report = await reconcile_pending(
                database, gateway, SystemClock(), timedelta(seconds=age)
            )
        finally:
            await gateway.aclose()
        typer.echo(f"settled {report.settled}, still unknown {report.still_unknown}")

    _run(work, settings)


@cli.command()
def pending() -> None:
    """List payments whose outcome is not known yet (deposits, card orders, refunds, card
    attempts at invoices)."""

    async def work(database: Database) -> None:
        lines = [
            f"{p.kind:<7}  {p.ref}  {p.account_id}  {format_amount(p.amount_cents):>12}  "
            f"{_age(p.age)}  {p.note}".rstrip()
            for p in await list_pending(database)
        ]
        typer.echo("\n".join(lines) if lines else "no pending payments")

    _run(work)


def _age(wait: timedelta) -> str:
    return f"{int(wait.total_seconds())}s"


def _period(text: str) -> date:
    try:
        return parse_period(text)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


AccountsOption = Annotated[
    list[str] | None,
    typer.Option("--account", help="Only this account (acct_...); repeat for several."),
]


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("expected an ISO date and time, e.g. 2026-12-01T09:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


AsOfOption = Annotated[
    datetime | None,
    typer.Option(
        parser=_moment,
        metavar="ISO-TIME",
        help="Run as if it were this moment (UTC unless given): to rehearse a month or a "
        "dunning day on a test database. What it makes is dated then.",
    ),
]


def _clock(as_of: datetime | None) -> Clock:
    return ManualClock(as_of) if as_of else SystemClock()


@cli.command()
def bill(
    period: Annotated[
        date,
        typer.Option(
            parser=_period, metavar="YYYY-MM", help="The month to bill (ended), e.g. 2026-11."
        ),
    ],
    accounts: AccountsOption = None,
    as_of: AsOfOption = None,
) -> None:
    """Invoice a month that has ended (in arrears: what each subscription ran in it, at most
    once per account and month, however often it runs) and collect its due invoices. A month
    not over yet by the clock (--as-of, or now) is refused."""
    settings = _settings()
    gateway = _gateway(settings)

    async def work(database: Database) -> None:
        try:
            report = await bill_period(
                database, gateway, _clock(as_of), period, account_ids=accounts or None
            )
        finally:
            await gateway.aclose()
        typer.echo(f"{period:%Y-%m}: {report}")

    _run(work, settings)


@cli.command("retry-invoices")
def retry_invoices(accounts: AccountsOption = None, as_of: AsOfOption = None) -> None:
    """Make every due attempt at open invoices of any period now: first attempts a run did
    not get to, and dunning retries (days 1, 3 and 7 after the first attempt)."""
    settings = _settings()
    gateway = _gateway(settings)

    async def work(database: Database) -> None:
        try:
            report = await collect_due(
                database, gateway, _clock(as_of), account_ids=accounts or None
            )
        finally:
            await gateway.aclose()
        typer.echo(str(report))

    _run(work, settings)


@cli.command("dead-letters")
def dead_letters(limit: int = 100) -> None:
    """List outbox messages given up after their last attempt."""

    async def work(database: Database) -> None:
        letters = await database.run(lambda unit: outbox.dead_letters(unit, limit))
        for letter in letters:
            to = letter.payload.get("to", "")
            typer.echo(
                f"{letter.id}  {letter.topic}  {to}  attempts={letter.attempts}  "
                f"{letter.created_at:%Y-%m-%d %H:%M:%S}  {letter.last_error or ''}"
            )
        if not letters:
            typer.echo("no dead letters")

    _run(work)


@cli.command("requeue-dead-letters")
def requeue_dead_letters(
    ids: Annotated[list[int] | None, typer.Argument(help="Message ids; none: all of them.")] = None,
) -> None:
    """Give dead letters a fresh set of attempts (after fixing what made them fail)."""

    async def work(database: Database) -> None:
        count = await database.run(lambda unit: outbox.requeue_dead(unit, ids or None))
        typer.echo(f"requeued {count}")

    _run(work)


@cli.command()
def worker() -> None:
    """Run the worker on its own (beside API processes started with RUN_WORKER=false)."""
    settings = _settings("INFO")
    gateway = _gateway(settings)
    assert settings.database_url is not None
    upgrade_to_head(settings.database_url)

    async def work(database: Database) -> None:
        task = asyncio.create_task(Worker(settings, database, gateway).run())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            await gateway.aclose()

    _run(work, settings)


def main() -> None:
    cli(prog_name="billing")


if __name__ == "__main__":
    main()
