"""The cron's windows for a run at time T (contract.md section 3). Pure functions.

Datetimes are aware UTC at the edges of this module; the app's columns are
``timestamp without time zone`` holding UTC, so ``naive_utc`` converts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

DAY = timedelta(days=1)


@dataclass(frozen=True, order=True)
class Window:
    """A half-open interval [start, end) in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("Window needs aware UTC datetimes")
        if self.end <= self.start:
            raise ValueError(f"Window ends before it starts: {self.start} .. {self.end}")

    @property
    def is_utc_day(self) -> bool:
        return self.end - self.start == DAY and self.start.timetz() == time(0, tzinfo=UTC)

    def __str__(self) -> str:
        return f"[{iso(self.start)}, {iso(self.end)})"


def as_utc(value: datetime) -> datetime:
    """Aware UTC; a naive value is taken to hold UTC already (as the app's columns do)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def naive_utc(value: datetime) -> datetime:
    return as_utc(value).replace(tzinfo=None)


def iso(value: datetime) -> str:
    return as_utc(value).isoformat().replace("+00:00", "Z")


def day_start(value: datetime) -> datetime:
    v = as_utc(value)
    return datetime(v.year, v.month, v.day, tzinfo=UTC)


def utc_day(value: datetime) -> date:
    return as_utc(value).date()


def daily_windows(run_at: datetime) -> list[Window]:
    """Flag on: UTC days from start-of-day(T-24h) to start-of-day(T), inclusive.

    For any T that is exactly two windows: yesterday and today.
    """
    end = as_utc(run_at)
    start = end - DAY
    first = day_start(start)
    last = day_start(end)
    windows = []
    cursor = first
    while cursor <= last:
        windows.append(Window(cursor, cursor + DAY))
        cursor += DAY
    return windows


def unaligned_window(run_at: datetime) -> Window:
    """Flag off: one window [T-24h, T)."""
    end = as_utc(run_at)
    return Window(end - DAY, end)


def expected_windows(run_at: datetime, flag_on: bool = True) -> list[Window]:
    return daily_windows(run_at) if flag_on else [unaligned_window(run_at)]


def expected_windows_processed(active_keys: int) -> int:
    """The audit checklist's "days x key count": two windows per active key."""
    return 2 * active_keys


def in_scope(run_at: datetime, window_start: datetime, window_end: datetime) -> bool:
    """A row written by a run at T is in scope iff it is one UTC day starting yesterday or today."""
    start = as_utc(window_start)
    end = as_utc(window_end)
    today = day_start(run_at)
    return end - start == DAY and start == day_start(start) and today - DAY <= start <= today


def scope_range(run_at: datetime) -> Window:
    """The span every in-scope row lies in: [yesterday 00:00, tomorrow 00:00)."""
    today = day_start(run_at)
    return Window(today - DAY, today + DAY)


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)
