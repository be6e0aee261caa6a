"""Billing periods: calendar months in UTC, each named by its first day (a `date`)."""

import re
from datetime import UTC, date, datetime, timedelta

_PERIOD = re.compile(r"^(\d{4})-(\d{2})$")


def period_of(moment: datetime) -> date:
    """The period `moment` falls in."""
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def next_period(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def period_start_at(period: date) -> datetime:
    """The moment a period starts: its first day at 00:00 UTC."""
    return datetime(period.year, period.month, 1, tzinfo=UTC)


def last_day(period: date) -> date:
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
