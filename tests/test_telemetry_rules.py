"""The telemetry's own arithmetic (rules.telemetry, issue 27): each rule passes the app's
honest bodies (contract.md sections 2 and 9) and fails each lie with its exact message."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from cron_dryrun.exchange.record import UsageRow
from cron_dryrun.rules.telemetry import (
    OpenAIKey,
    WrittenRows,
    judge_counters_agree,
    judge_counters_are_counts,
    judge_fallback_within_writes,
    judge_manual_fallback,
    judge_user_counts,
    judge_warning_count,
    judge_write_modes,
    judge_writes_counted,
    read_counters,
    windows_by_key,
)

YESTERDAY = datetime(2025, 10, 7)
TODAY = datetime(2025, 10, 8)


def body(top: dict[str, Any] | None = None, **telemetry: Any) -> dict[str, Any]:
    """contract.md section 2's success body, with changes."""
    t: dict[str, Any] = {
        "processedUsers": 3,
        "processedKeys": 4,
        "simulatedKeys": 0,
        "failedKeys": 0,
        "storedEvents": 12,
        "updatedEvents": 0,
        "windowsProcessed": 8,
        "constraintInserts": 12,
        "constraintUpdates": 0,
        "manualFallbackInserts": 0,
        "manualFallbackUpdates": 0,
        "manualFallbackWindows": 0,
        "manualFallbackKeys": 0,
        "issuesByCode": {},
    }
    t.update(telemetry)
    b: dict[str, Any] = {
        "success": True,
        "processed": 3,
        "successful": 3,
        "errors": 0,
        "warningCount": 0,
        "timestamp": "2025-10-08T20:04:17.123Z",
        "telemetry": t,
    }
    b.update(top or {})
    return b


# the app's default (unique-index upsert off): every write through the manual fallback
MANUAL_FALLBACK = {
    "storedEvents": 6,
    "constraintInserts": 0,
    "manualFallbackInserts": 6,
    "manualFallbackWindows": 6,
    "manualFallbackKeys": 3,
}


@pytest.mark.parametrize(
    "honest",
    [
        body(),
        body(**MANUAL_FALLBACK),
        # rerun through the fallback: updates only
        body(
            storedEvents=0,
            updatedEvents=6,
            constraintInserts=0,
            manualFallbackUpdates=6,
            manualFallbackWindows=6,
            manualFallbackKeys=3,
        ),
        # every provider call failing (contract 9): each failed key counts twice
        body(
            {"warningCount": 8},
            storedEvents=0,
            constraintInserts=0,
            windowsProcessed=0,
            failedKeys=4,
            issuesByCode={"UNKNOWN": 8},
        ),
        # a user whose ingestion threw: an error, and its issues are not counted
        body({"successful": 2, "errors": 1}),
        # a key that wrote a window through the fallback, then failed: its windows are not
        # processed, its fallback window still counts (usage-fetcher.ts finally block)
        body(
            {"warningCount": 2},
            storedEvents=3,
            constraintInserts=0,
            manualFallbackInserts=3,
            manualFallbackWindows=1,
            manualFallbackKeys=1,
            windowsProcessed=0,
            failedKeys=1,
            issuesByCode={"PROVIDER_ERROR": 1, "UNKNOWN": 1},
        ),
        # counts written as floats without a fraction are still counts
        body({"processed": 3.0}, storedEvents=12.0),
    ],
)
def test_honest_bodies_pass_every_rule(honest: dict[str, Any]) -> None:
    assert judge_counters_agree(read_counters(honest)) == []


def test_the_rules_fail_a_lie_only_once_each() -> None:
    lies = body({"warningCount": 4}, issuesByCode={"PRICING_FALLBACK": 1, "UNKNOWN": 2})
    assert judge_counters_agree(read_counters(lies)) == [
        "warningCount is 4, but the issues in telemetry.issuesByCode add up to 3 "
        "(PRICING_FALLBACK: 1, UNKNOWN: 2): the app counts every issue once in each"
    ]


# -- counts -----------------------------------------------------------------------------------------


def test_a_counter_that_is_not_a_count_is_named_and_left_out_of_the_arithmetic() -> None:
    counters = read_counters(
        body(
            {"errors": True, "processed": -1},
            storedEvents=2.5,
            constraintUpdates="0",
            issuesByCode={"UNKNOWN": -2},
        )
    )
    assert judge_counters_are_counts(counters) == (
        "processed is -1, expected a whole number >= 0; "
        "errors is true, expected a whole number >= 0; "
        "telemetry.storedEvents is 2.5, expected a whole number >= 0; "
        'telemetry.constraintUpdates is "0", expected a whole number >= 0; '
        "telemetry.issuesByCode.UNKNOWN is -2, expected a whole number >= 0"
    )
    assert counters.get("storedEvents") is None and counters.issues is None
    assert judge_warning_count(counters) is None  # left to the count rule
    assert judge_user_counts(counters) is None
    assert judge_write_modes(counters) is None


def test_absent_counters_are_the_schemas_business() -> None:
    bare = read_counters({"telemetry": {}})
    assert bare.values == {} and bare.issues is None
    assert judge_counters_agree(bare) == []


def test_a_long_value_is_described_in_the_message_never_cut() -> None:
    # a cut would leave the head of a secret the answer quotes across it (issue 24)
    message = judge_counters_are_counts(read_counters(body(failedKeys="x" * 500)))
    assert message == (
        "telemetry.failedKeys is a JSON str of 502 characters (not shown: too long), "
        "expected a whole number >= 0"
    )


# -- warningCount -----------------------------------------------------------------------------------


def test_warning_count_off_names_both_numbers() -> None:
    assert judge_warning_count(read_counters(body({"warningCount": 1}))) == (
        "warningCount is 1, but the issues in telemetry.issuesByCode add up to 0: "
        "the app counts every issue once in each"
    )


def test_warning_count_equal_to_the_issues_passes() -> None:
    honest = body({"warningCount": 3}, issuesByCode={"PRICING_FALLBACK": 1, "SCOPE_MISSING": 2})
    assert judge_warning_count(read_counters(honest)) is None


# -- users ------------------------------------------------------------------------------------------


def test_successful_and_errors_must_add_up_to_processed() -> None:
    assert judge_user_counts(read_counters(body({"successful": 2}))) == (
        "processed is 3, but successful + errors is 2 + 0 = 2: every user processed counts "
        "once, as successful or as an error"
    )


def test_processed_users_must_be_processed() -> None:
    assert judge_user_counts(read_counters(body(processedUsers=4))) == (
        "telemetry.processedUsers is 4, but processed is 3: both count the users the run read"
    )


# -- write modes ------------------------------------------------------------------------------------


def test_stored_events_must_be_the_inserts_of_both_modes() -> None:
    assert judge_write_modes(read_counters(body(constraintInserts=13))) == (
        "telemetry.storedEvents is 12, but constraintInserts + manualFallbackInserts is "
        "13 + 0 = 13: every write counts once, in one mode"
    )


def test_updated_events_must_be_the_updates_of_both_modes() -> None:
    lie = body(updatedEvents=5, constraintUpdates=2, manualFallbackUpdates=2)
    assert judge_write_modes(read_counters(lie)) == (
        "telemetry.updatedEvents is 5, but constraintUpdates + manualFallbackUpdates is "
        "2 + 2 = 4: every write counts once, in one mode"
    )


# -- manual fallback --------------------------------------------------------------------------------


def test_fallback_keys_zero_with_fallback_writes_fails() -> None:
    lie = body(**{**MANUAL_FALLBACK, "manualFallbackInserts": 4, "storedEvents": 4})
    lie["telemetry"].update(manualFallbackKeys=0, manualFallbackWindows=4)
    assert judge_manual_fallback(read_counters(lie)) == (
        "telemetry.manualFallbackKeys is 0, but manualFallbackInserts + manualFallbackUpdates "
        "is 4 + 0 = 4: writes through the manual fallback come from at least one key"
    )


def test_fallback_windows_zero_with_fallback_writes_fails() -> None:
    lie = body(**{**MANUAL_FALLBACK, "manualFallbackWindows": 0, "manualFallbackKeys": 0})
    assert judge_manual_fallback(read_counters(lie)) == (
        "telemetry.manualFallbackKeys is 0, but manualFallbackInserts + manualFallbackUpdates "
        "is 6 + 0 = 6: writes through the manual fallback come from at least one key; "
        "telemetry.manualFallbackWindows is 0, but manualFallbackInserts + "
        "manualFallbackUpdates is 6 + 0 = 6: writes through the manual fallback come from at "
        "least one window"
    )


def test_fallback_windows_without_fallback_writes_fail() -> None:
    assert judge_manual_fallback(read_counters(body(manualFallbackWindows=2))) == (
        "telemetry.manualFallbackWindows is 2, but manualFallbackInserts + "
        "manualFallbackUpdates is 0 + 0 = 0: no write went through the manual fallback"
    )


def test_more_fallback_keys_than_windows_fails() -> None:
    lie = body(**{**MANUAL_FALLBACK, "manualFallbackKeys": 4, "manualFallbackWindows": 3})
    assert judge_manual_fallback(read_counters(lie)) == (
        "telemetry.manualFallbackKeys is 4, but manualFallbackWindows is 3: each such key "
        "wrote at least one window"
    )


def test_more_fallback_windows_than_fallback_writes_fails() -> None:
    lie = body(**{**MANUAL_FALLBACK, "manualFallbackWindows": 7})
    assert judge_manual_fallback(read_counters(lie)) == (
        "telemetry.manualFallbackWindows is 7, but manualFallbackInserts + "
        "manualFallbackUpdates is 6 + 0 = 6: each such window had at least one write"
    )


def test_more_fallback_keys_than_keys_processed_fails() -> None:
    lie = body(
        **{**MANUAL_FALLBACK, "manualFallbackKeys": 5, "manualFallbackWindows": 6},
        processedKeys=4,
    )
    assert judge_manual_fallback(read_counters(lie)) == (
        "telemetry.manualFallbackKeys is 5, but processedKeys is 4"
    )


# -- against the rows written -----------------------------------------------------------------------


def rows(*specs: tuple[int, int, datetime | None]) -> list[UsageRow]:
    """(id, key id, window start) -> rows of one day."""
    return [
        UsageRow(i, key, "gpt-4o-mini", start, None if start is None else start + timedelta(days=1))
        for i, key, start in specs
    ]


def test_written_rows_split_by_the_largest_id_before() -> None:
    written = WrittenRows.split(rows((12, 1, TODAY), (3, 1, YESTERDAY), (10, 2, TODAY)), 10)
    assert [r.id for r in written.inserted] == [12]
    assert [r.id for r in written.updated] == [3, 10]
    assert [r.id for r in written.all] == [3, 10, 12]


def test_writes_counted_pass_when_the_counters_are_the_rows() -> None:
    written = WrittenRows.split(rows((11, 1, TODAY), (12, 1, YESTERDAY), (4, 2, TODAY)), 10)
    honest = read_counters(body(storedEvents=2, updatedEvents=1))
    assert judge_writes_counted(honest, written, "main exchange") is None


def test_inserts_reported_as_updates_fail_with_both_numbers_and_the_ids() -> None:
    written = WrittenRows.split(rows(*((100 + i, 1, TODAY) for i in range(16))), 99)
    lie = read_counters(body(storedEvents=0, updatedEvents=16))
    assert judge_writes_counted(lie, written, "main exchange") == (
        "main exchange: telemetry.storedEvents is 0, but the exchange inserted 16 new "
        "usage_events row(s) (ids 100, 101, 102, 103, 104, ... 11 more)"
    )


def test_updates_reported_as_inserts_on_a_rerun_fail() -> None:
    written = WrittenRows.split(rows((5, 1, TODAY), (6, 1, YESTERDAY)), 6)
    lie = read_counters(body(storedEvents=2, updatedEvents=0))
    assert judge_writes_counted(lie, written, "idempotent rerun") == (
        "idempotent rerun: telemetry.storedEvents is 2, but the exchange inserted 0 new "
        "usage_events row(s); idempotent rerun: telemetry.updatedEvents is 0, but the "
        "exchange updated 2 existing usage_events row(s) (ids 5, 6)"
    )


def test_upserts_that_hit_a_row_of_the_same_run_count_as_updates() -> None:
    # a standard key: 5 legacy entries of one model and day share one row, inserted then
    # updated 4 times (usage-fetcher.ts counts each upsert), and an existing row rewritten
    written = WrittenRows.split(rows((11, 2, TODAY), (3, 2, YESTERDAY)), 10)
    honest = read_counters(body(storedEvents=1, updatedEvents=5))
    assert judge_writes_counted(honest, written, "main exchange") is None


def test_fallback_windows_beyond_the_pairs_written_fail() -> None:
    written = WrittenRows.split(
        rows((11, 1, TODAY), (12, 1, TODAY), (13, 1, YESTERDAY), (14, 2, TODAY)), 10
    )
    lie = read_counters(body(manualFallbackWindows=4, manualFallbackKeys=3))
    assert judge_fallback_within_writes(lie, written, "main exchange") == (
        "main exchange: telemetry.manualFallbackWindows is 4, but the exchange wrote rows for "
        "3 (key, window) pair(s); main exchange: telemetry.manualFallbackKeys is 3, but the "
        "exchange wrote rows for 2 key(s)"
    )
    honest = read_counters(body(manualFallbackWindows=3, manualFallbackKeys=2))
    assert judge_fallback_within_writes(honest, written, "main exchange") is None


# -- per key ----------------------------------------------------------------------------------------

KEYS = [OpenAIKey(1, "admin"), OpenAIKey(2, "standard"), OpenAIKey(3, "standard")]


def test_windows_by_key_lists_each_key_and_notes_a_silent_one() -> None:
    written = rows((1, 1, YESTERDAY), (2, 1, TODAY), (3, 2, TODAY))
    listing, notes = windows_by_key(KEYS, written, [YESTERDAY, TODAY], {}, 0)
    assert listing == {
        "key 1 (admin)": ["2025-10-07", "2025-10-08"],
        "key 2 (standard)": ["2025-10-08"],
        "key 3 (standard)": [],
    }
    assert notes == [
        "key 2 (standard): no usage reported for the window starting 2025-10-07 "
        "(no row written, no issue code explains it)",
        "key 3 (standard): no usage reported for the window starting 2025-10-07 "
        "(no row written, no issue code explains it)",
        "key 3 (standard): no usage reported for the window starting 2025-10-08 "
        "(no row written, no issue code explains it)",
    ]


def test_windows_by_key_names_the_issues_that_may_explain_a_gap() -> None:
    written = rows((1, 2, YESTERDAY), (2, 2, TODAY))
    _, notes = windows_by_key(
        KEYS[:2], written, [YESTERDAY, TODAY], {"PROVIDER_ERROR": 1, "UNKNOWN": 1}, 1
    )
    assert notes == [
        "key 1 (admin): no rows for the window starting 2025-10-07 (the cron reports "
        "failedKeys 1 (PROVIDER_ERROR: 1, UNKNOWN: 1), which may explain it)",
        "key 1 (admin): no rows for the window starting 2025-10-08 (the cron reports "
        "failedKeys 1 (PROVIDER_ERROR: 1, UNKNOWN: 1), which may explain it)",
    ]


def test_a_pricing_fallback_explains_no_gap() -> None:
    _, notes = windows_by_key(KEYS[:1], [], [TODAY], {"PRICING_FALLBACK": 1}, 0)
    assert notes == [
        "key 1 (admin): no usage reported for the window starting 2025-10-08 "
        "(no row written, no issue code explains it)"
    ]


def test_windows_by_key_shows_unaligned_and_null_windows_as_written() -> None:
    unaligned = datetime(2025, 10, 7, 2, 0, 5)
    listing, notes = windows_by_key(KEYS[:1], rows((1, 1, unaligned), (2, 1, None)), [TODAY], {}, 0)
    assert listing == {"key 1 (admin)": ["2025-10-07T02:00:05", "NULL"]}
    assert notes == [
        "key 1 (admin): no rows for the window starting 2025-10-08; its rows are for "
        "2025-10-07T02:00:05, NULL (see window scoping)"
    ]
