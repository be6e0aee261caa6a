"""Operator commands: `billing --help` (or `python -m app.cli --help`).

Each command reads the same environment as the API (DATABASE_URL, unset: the embedded
PostgreSQL under ./.data) and goes through the same services, so an adjustment is a ledger
entry like any other and a reconciliation settles exactly once however many run at once.
"""

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.schemas import SignupIn
from app.accounts.service import create_account as create_account_service
from app.billing.models import Invoice, InvoiceAttempt
from app.billing.periods import parse_period
from app.billing.run import bill_period, collect_due
from app.clock import Clock, ManualClock, SystemClock
from app.config import Settings
from app.db import create_engine, create_session_factory
from app.errors import ApiError
from app.finance.models import Deposit
from app.finance.service import adjust_balance as adjust_balance_service
from app.gateway.base import Gateway
from app.gateway.factory import create_gateway
from app.logs import configure_logging
from app.migrate import upgrade_to_head
from app.money import format_amount, parse_amount
from app.orders.models import CertificateOrder
from app.serve import use_embedded_database_if_unset
from app.worker import outbox
from app.worker.reconcile import reconcile_pending
from app.worker.runner import Worker

cli = typer.Typer(
    help="Operator commands of the billing service.", no_args_is_help=True, add_completion=False
)

T = TypeVar("T")
Factory = async_sessionmaker[AsyncSession]


def _settings(log_level: str = "WARNING") -> Settings:
    configure_logging(log_level)
    return use_embedded_database_if_unset()


def _run(work: Callable[[Factory], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run `work` with a session factory over a fresh engine, and report a refused operation
    the way the API would, as its code and detail."""
    settings = settings or _settings()

    async def main() -> T:
        engine = create_engine(settings)
        try:
            return await work(create_session_factory(engine))
        finally:
            await engine.dispose()

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
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    company: Annotated[str | None, typer.Option(help="The company name, if any.")] = None,
) -> None:
    """Create an account and its first admin (sign-up without its switch and throttle)."""
    try:
        body = SignupIn(email=email, password=password, name=name, company_name=company)
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"])
            typer.echo(f"error: {field}: {problem['msg']}", err=True)
        raise typer.Exit(1) from None

    async def work(factory: Factory) -> None:
        async with factory() as session:
            account, user = await create_account_service(session, body)
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

    async def work(factory: Factory) -> None:
        async with factory() as session:
            posting = await adjust_balance_service(session, account_id, cents, reason.strip())
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

    async def work(factory: Factory) -> None:
        try:
            report = await reconcile_pending(
                factory, gateway, SystemClock(), timedelta(seconds=age)
            )
        finally:
            await gateway.aclose()
        typer.echo(f"settled {report.settled}, still unknown {report.still_unknown}")

    _run(work, settings)


@cli.command()
def pending() -> None:
    """List payments whose outcome is not known yet (deposits, card orders, refunds, card
    attempts at invoices)."""

    async def work(factory: Factory) -> None:
        async with factory() as session, session.begin():
            age = func.clock_timestamp() - Deposit.created_at
            deposits = await session.execute(
                select(Deposit.id, Deposit.account_id, Deposit.amount_cents, age)
                .where(Deposit.status == "pending")
                .order_by(Deposit.created_at)
            )
            order_age = func.clock_timestamp() - CertificateOrder.created_at
            orders = await session.execute(
                select(
                    CertificateOrder.id,
                    CertificateOrder.account_id,
                    CertificateOrder.amount_cents,
                    order_age,
                    CertificateOrder.status,
                )
                .where(
                    (CertificateOrder.status == "pending_payment")
                    | (CertificateOrder.refund_status == "pending")
                )
                .order_by(CertificateOrder.created_at)
            )
            attempt_age = func.clock_timestamp() - InvoiceAttempt.created_at
            attempts = await session.execute(
                select(
                    InvoiceAttempt.invoice_id,
                    InvoiceAttempt.number,
                    Invoice.account_id,
                    InvoiceAttempt.amount_cents,
                    attempt_age,
                )
                .join(Invoice, Invoice.id == InvoiceAttempt.invoice_id)
                .where(InvoiceAttempt.outcome == "pending")
                .order_by(InvoiceAttempt.created_at)
            )
            lines = (
                [
                    f"deposit  {id_}  {account}  {format_amount(cents):>12}  {_age(wait)}"
                    for id_, account, cents, wait in deposits
                ]
                + [
                    f"{'order' if status == 'pending_payment' else 'refund':<7}  {id_}  "
                    f"{account}  {format_amount(cents):>12}  {_age(wait)}"
                    for id_, account, cents, wait, status in orders
                ]
                + [
                    f"invoice  {id_}  {account}  {format_amount(cents):>12}  {_age(wait)}  "
                    f"attempt {number}"
                    for id_, number, account, cents, wait in attempts
                ]
            )
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
        typer.Option(parser=_period, metavar="YYYY-MM", help="The month to bill, e.g. 2026-12."),
    ],
    accounts: AccountsOption = None,
    as_of: AsOfOption = None,
) -> None:
    """Invoice every account with active subscriptions for a period (at most once per account
    and period, however often it runs) and collect the period's due invoices."""
    settings = _settings()
    gateway = _gateway(settings)

    async def work(factory: Factory) -> None:
        try:
            report = await bill_period(
                factory, gateway, _clock(as_of), period, account_ids=accounts or None
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

    async def work(factory: Factory) -> None:
        try:
            report = await collect_due(
                factory, gateway, _clock(as_of), account_ids=accounts or None
            )
        finally:
            await gateway.aclose()
        typer.echo(str(report))

    _run(work, settings)


@cli.command("dead-letters")
def dead_letters(limit: int = 100) -> None:
    """List outbox messages given up after their last attempt."""

    async def work(factory: Factory) -> None:
        letters = await outbox.dead_letters(factory, limit)
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

    async def work(factory: Factory) -> None:
        count = await outbox.requeue_dead(factory, ids or None)
        typer.echo(f"requeued {count}")

    _run(work)


@cli.command()
def worker() -> None:
    """Run the worker on its own (beside API processes started with RUN_WORKER=false)."""
    settings = _settings("INFO")
    gateway = _gateway(settings)
    assert settings.database_url is not None
    upgrade_to_head(settings.database_url)

    async def work(factory: Factory) -> None:
        task = asyncio.create_task(Worker(settings, factory, gateway).run())
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
