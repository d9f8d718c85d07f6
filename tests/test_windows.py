"""Expected windows for a run at T (contract.md section 3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from cron_dryrun.windows import (
    Window,
    daily_windows,
    expected_windows,
    expected_windows_processed,
    in_scope,
    unaligned_window,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    "run_at",
    [utc(2025, 10, 8, 0, 0, 0), utc(2025, 10, 8, 2, 0, 0), utc(2025, 10, 8, 23, 59, 59)],
    ids=["00:00:00", "02:00:00", "23:59:59"],
)
def test_flag_on_gives_yesterday_and_today(run_at: datetime) -> None:
    assert daily_windows(run_at) == [
        Window(utc(2025, 10, 7), utc(2025, 10, 8)),
        Window(utc(2025, 10, 8), utc(2025, 10, 9)),
    ]


def test_flag_off_gives_one_unaligned_window() -> None:
    run_at = utc(2025, 10, 8, 2, 0, 0)
    assert expected_windows(run_at, flag_on=False) == [Window(utc(2025, 10, 7, 2), run_at)]
    assert not unaligned_window(run_at).is_utc_day


def test_windows_processed_is_two_per_key() -> None:
    assert expected_windows_processed(4) == 8


def test_naive_times_are_taken_as_utc() -> None:
    assert in_scope(utc(2025, 10, 8, 2), datetime(2025, 10, 7), datetime(2025, 10, 8))


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (utc(2025, 10, 7), utc(2025, 10, 8), True),
        (utc(2025, 10, 8), utc(2025, 10, 9), True),
        (utc(2025, 10, 6), utc(2025, 10, 7), False),  # a day too early
        (utc(2025, 10, 9), utc(2025, 10, 10), False),  # tomorrow
        (utc(2025, 10, 7), utc(2025, 10, 9), False),  # two days wide
        (utc(2025, 10, 7, 2), utc(2025, 10, 8, 2), False),  # not at midnight
    ],
)
def test_in_scope(start: datetime, end: datetime, expected: bool) -> None:
    assert in_scope(utc(2025, 10, 8, 2), start, end) is expected


def test_window_rejects_naive_and_reversed() -> None:
    with pytest.raises(ValueError, match="aware UTC"):
        Window(datetime(2025, 1, 1), datetime(2025, 1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ends before it starts"):
        Window(utc(2025, 1, 2), utc(2025, 1, 1))


@freeze_time("2025-10-08T02:00:00Z")
def test_windows_follow_the_frozen_clock() -> None:
    now = datetime.now(UTC)
    assert [w.start for w in daily_windows(now)] == [utc(2025, 10, 7), utc(2025, 10, 8)]
    assert daily_windows(now)[0].end - daily_windows(now)[0].start == timedelta(days=1)
