"""Billing periods: calendar months in UTC, each named by its first day (a `date`), and what
a subscription owes for the part of one it ran."""

import re
from datetime import UTC, date, datetime, timedelta

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")
_SECOND = timedelta(seconds=1)


def period_of(moment: datetime) -> date:
    """The period `moment` falls in."""
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def next_period(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def previous_period(period: date) -> date:
    return date(period.year - (period.month == 1), (period.month - 2) % 12 + 1, 1)


def period_start_at(period: date) -> datetime:
    """The moment a period starts: its first day at 00:00 UTC."""
    return datetime(period.year, period.month, 1, tzinfo=UTC)


def period_end_at(period: date) -> datetime:
    """The moment a period ends (excluded from it): the next period's first moment."""
    return period_start_at(next_period(period))


def last_day(period: date) -> date:
    """The period's last day: an invoice's `period_end`, and what its PDF prints."""
    return next_period(period) - timedelta(days=1)


def period_name(period: date) -> str:
    """`December 2026`."""
    return f"{period:%B %Y}"


def parse_period(text: str) -> date:
    """`2026-12` → the period starting 2026-12-01; ValueError for anything else."""
    match = _PERIOD.match(text.strip())
    if match is None or not 1 <= int(match[2]) <= 12 or int(match[1]) < 2000:
        raise ValueError("a period is a month written YYYY-MM, e.g. 2026-12")
    return date(int(match[1]), int(match[2]), 1)


def active_in(
    period: date, started_at: datetime, ended_at: datetime | None
) -> tuple[datetime, datetime] | None:
    """The part of `period` a subscription ran in ([start, end)), or None if it did not."""
    start = max(started_at, period_start_at(period))
    end = min(ended_at, period_end_at(period)) if ended_at else period_end_at(period)
    return (start, end) if start < end else None


def prorated_cents(monthly_price_cents: int, period: date, start: datetime, end: datetime) -> int:
    """`monthly price * seconds active / seconds in the month`, rounded half-up to the cent.

    Integer arithmetic throughout: floor((2*p*a + m) / (2*m)) is p*a/m rounded half-up. The
    moments count to the whole second, as the API prints them (the fraction dropped), so a
    client can check a line from the subscription's started_at and ended_at. A whole month
    is exactly the monthly price."""
    active = (end.replace(microsecond=0) - start.replace(microsecond=0)) // _SECOND
    month = (period_end_at(period) - period_start_at(period)) // _SECOND
    return (2 * monthly_price_cents * active + month) // (2 * month)
