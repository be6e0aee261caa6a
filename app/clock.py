"""The time the billing rules see. It is injected (`app.state.clock`, the Worker's `clock`),
never read ad hoc, so tests can stand on a month boundary and walk through a dunning
schedule day by day."""

from datetime import UTC, date, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to: for tests and simulations."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = _aware(moment)

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("a clock keeps timezone-aware moments")
    return moment.astimezone(UTC)


# Billing periods are calendar months in UTC, named by their first day.


def period_of(moment: datetime) -> date:
    """The billing period (its first day) that `moment` falls in."""
    utc = moment.astimezone(UTC)
    return date(utc.year, utc.month, 1)


def next_period(period: date) -> date:
    return date(period.year + period.month // 12, period.month % 12 + 1, 1)


def period_start_at(period: date) -> datetime:
    """The moment a period starts: its first day at 00:00 UTC."""
    return datetime(period.year, period.month, period.day, tzinfo=UTC)
