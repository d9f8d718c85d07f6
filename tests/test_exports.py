"""Export readers: every quirk of contract.md section 5, and the DuckDB reader held to the reference."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from cron_dryrun.parity.formats import (
    METRICS,
    TOTALS_COLUMNS,
    DayKey,
    ExportProblem,
    key_hash_sql,
    missing_columns_message,
    parse_count,
    sniff_export,
)
from cron_dryrun.parity.readers import (
    DailyRollup,
    TimeOverlap,
    day_coverage,
    read_json_pages,
    rollup_daily,
    time_overlaps,
)
from cron_dryrun.parity.staging import FileLoad, StagedExport, stage_delimited_duckdb

HEADER = [
    "start_time",
    "end_time",
    "start_time_iso",
    "end_time_iso",
    "project_id",
    "num_model_requests",
    "user_id",
    "api_key_id",
    "model",
    "batch",
    "service_tier",
    "input_tokens",
    "output_tokens",
    "input_cached_tokens",
    "input_uncached_tokens",
    "input_text_tokens",
    "output_text_tokens",
    "input_cached_text_tokens",
    "input_audio_tokens",
    "input_cached_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "input_cached_image_tokens",
    "output_image_tokens",
]
DAY = date(2025, 10, 7)


def bucket_row(
    start: datetime | None = None,
    width: timedelta = timedelta(days=1),
    *,
    project: str = "proj_a",
    key: str = "key_a",
    user: str = "user_a",
    model: str = "gpt-4o",
    batch: str = "FALSE",
    tier: str = "default",
    iso_suffix: str = "+00:00",
    **metrics: object,
) -> dict[str, str]:
    start = start or datetime(2025, 10, 7, tzinfo=UTC)
    end = start + width
    cells = dict.fromkeys(HEADER, "0")
    cells.update(
        start_time=str(int(start.timestamp())),
        end_time=str(int(end.timestamp())),
        start_time_iso=start.strftime("%Y-%m-%dT%H:%M:%S") + iso_suffix,
        end_time_iso=end.strftime("%Y-%m-%dT%H:%M:%S") + iso_suffix,
        project_id=project,
        user_id=user,
        api_key_id=key,
        model=model,
        batch=batch,
        service_tier=tier,
        num_model_requests="1",
        input_tokens="100",
        output_tokens="10",
    )
    cells.update({k: str(v) for k, v in metrics.items()})
    return cells


def empty_row(
    start: datetime | None = None, width: timedelta = timedelta(days=1)
) -> dict[str, str]:
    cells = bucket_row(start, width)
    for name in HEADER[4:]:
        cells[name] = ""
    return cells


def write_export(
    path: Path, rows: list[dict[str, str] | str], header: list[str] = HEADER, sep: str = ","
) -> Path:
    lines = [sep.join(header)]
    for row in rows:
        lines.append(row if isinstance(row, str) else sep.join(row[c] for c in header))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def reference(paths: list[Path]) -> DailyRollup:
    return rollup_daily(paths)


def via_duckdb(path: Path) -> tuple[dict[DayKey, list[int]], FileLoad]:
    """The export as the diff stages it (``stage_delimited_duckdb``): its key-day totals."""
    con = duckdb.connect()
    staged = stage_delimited_duckdb(con, path, "export_rows")
    rows = relation_rows(con, staged.relation)
    totals = {DayKey(*row[:7]): [int(v) for v in row[9:]] for row in rows}
    assert len(totals) == len(rows), "one row per key-day"
    return totals, staged.load


def relation_rows(con: duckdb.DuckDBPyConnection, relation: str | None) -> list[tuple[Any, ...]]:
    """A staged export's key-day rows in TOTALS_COLUMNS; its key hash checked on the way:
    every row's ``kh`` is formats.key_hash_sql of its cells (what the database side's
    packed read computes from its joined key)."""
    if relation is None:
        return []
    (wrong,) = con.execute(  # type: ignore[misc]
        f"SELECT count(*) FROM ({relation}) WHERE kh IS DISTINCT FROM {key_hash_sql()}"
    ).fetchone()
    assert wrong == 0
    cols = ", ".join(f'"{c}"' for c in TOTALS_COLUMNS)
    return con.execute(f"SELECT {cols} FROM ({relation})").fetchall()


def key(**overrides: object) -> DayKey:
    fields = dict(
        day=DAY, project_id="proj_a", api_key_id="key_a", user_id="user_a", model="gpt-4o",
        service_tier="default", batch=False,
    )  # fmt: skip
    fields.update(overrides)
    return DayKey(**fields)  # type: ignore[arg-type]


def metric(values: list[int], name: str) -> int:
    return values[METRICS.index(name)]


# -- quirks ---------------------------------------------------------------------------------------


def test_float_counts_true_false_and_both_utc_spellings(tmp_path: Path) -> None:
    path = write_export(
        tmp_path / "e.csv",
        [
            bucket_row(input_tokens="59200.0", output_tokens="12.0", batch="FALSE"),
            bucket_row(iso_suffix="Z", input_tokens="800", batch="false"),
            bucket_row(batch="TRUE", input_tokens="5"),
        ],
    )
    rollup = reference([path])
    assert rollup.problem_count == 0
    assert metric(rollup.totals[key()], "input_tokens") == 60000
    assert metric(rollup.totals[key()], "output_tokens") == 22
    assert rollup.record_counts[key()] == 2
    assert metric(rollup.totals[key(batch=True)], "input_tokens") == 5


def test_tsv_paste_is_detected_by_header_and_columns_match_by_name(tmp_path: Path) -> None:
    shuffled = list(reversed(HEADER))
    path = write_export(tmp_path / "paste.txt", [bucket_row(input_tokens="42")], shuffled, "\t")
    fmt = sniff_export(path)
    assert fmt.kind == "tsv"
    rollup = reference([path])
    assert metric(rollup.totals[key()], "input_tokens") == 42
    totals, load = via_duckdb(path)
    assert totals == rollup.totals and load.problem_count == 0


def test_empty_bucket_rows_are_counted_and_cover_time(tmp_path: Path) -> None:
    path = write_export(tmp_path / "e.csv", [empty_row(), empty_row()])
    rollup = reference([path])
    assert rollup.totals == {}
    assert rollup.empty_bucket_rows == 2
    assert rollup.rows_without_ids == 0
    assert day_coverage(rollup.buckets[str(path)]) == {DAY: 86_400}


def test_rows_without_ids_are_counted_with_their_usage(tmp_path: Path) -> None:
    path = write_export(
        tmp_path / "e.csv", [bucket_row(project="", key="", user="", input_tokens=7)]
    )
    rollup = reference([path])
    assert rollup.totals == {}
    assert rollup.rows_without_ids == 1
    assert metric(rollup.without_ids_totals, "input_tokens") == 7
    _, load = via_duckdb(path)
    assert load.rows_without_ids == 1 and metric(load.without_ids_totals, "input_tokens") == 7


def test_repeated_keys_in_one_bucket_add_up(tmp_path: Path) -> None:
    path = write_export(
        tmp_path / "e.csv", [bucket_row(input_tokens=100), bucket_row(input_tokens=250)]
    )
    rollup = reference([path])
    assert metric(rollup.totals[key()], "input_tokens") == 350
    assert rollup.record_counts[key()] == 2


@pytest.mark.parametrize("width", [timedelta(minutes=1), timedelta(hours=1)])
def test_minute_and_hour_buckets_sum_to_the_daily_row(tmp_path: Path, width: timedelta) -> None:
    midnight = datetime(2025, 10, 7, tzinfo=UTC)
    n = int(timedelta(days=1) / width)
    fine = [
        bucket_row(midnight + i * width, width, input_tokens=i, output_tokens=1) for i in range(n)
    ]
    daily = [bucket_row(input_tokens=sum(range(n)), output_tokens=n, num_model_requests=n)]
    fine_path = write_export(tmp_path / "fine.csv", fine)  # type: ignore[arg-type]
    daily_path = write_export(tmp_path / "daily.csv", daily)  # type: ignore[arg-type]
    fine_rollup, daily_rollup = reference([fine_path]), reference([daily_path])
    assert fine_rollup.totals == daily_rollup.totals
    assert day_coverage(fine_rollup.buckets[str(fine_path)]) == {DAY: 86_400}
    totals, load = via_duckdb(fine_path)
    assert totals == daily_rollup.totals
    assert day_coverage(load.buckets) == {DAY: 86_400}


def test_partial_coverage_is_measured() -> None:
    midnight = datetime(2025, 10, 7, tzinfo=UTC)
    hours = [(midnight + timedelta(hours=h), midnight + timedelta(hours=h + 1)) for h in range(12)]
    assert day_coverage(hours) == {DAY: 12 * 3600}


# -- bad rows ------------------------------------------------------------------------------------


def bad_export(tmp_path: Path) -> Path:
    good = bucket_row(input_tokens=100)
    short = ",".join(bucket_row()[c] for c in HEADER[:7])
    long = ",".join(bucket_row()[c] for c in HEADER) + ",9"
    return write_export(
        tmp_path / "bad.csv",
        [
            good,  # line 2
            bucket_row(input_tokens="abc"),  # 3
            short,  # 4
            "",  # 5: a blank line is not a row, but it shifts the line numbers
            long,  # 6
            bucket_row(datetime(2025, 10, 7, 23, tzinfo=UTC), timedelta(hours=2)),  # 7
            {**bucket_row(), "start_time_iso": "yesterday"},  # 8
            bucket_row(batch="maybe"),  # 9
            bucket_row(output_tokens="12.5"),  # 10
            bucket_row(output_tokens="-3"),  # 11
            bucket_row(input_tokens=1),  # 12
        ],
    )


EXPECTED_PROBLEMS = [
    (3, "input_tokens: not a whole non-negative number: 'abc'"),
    (4, "expected 24 columns, found 7"),
    (6, "expected 24 columns, found more"),
    (7, "bucket crosses midnight UTC: 2025-10-07T23:00:00Z .. 2025-10-08T01:00:00Z"),
    (8, "unparseable time in start_time_iso: 'yesterday'"),
    (9, "batch: not TRUE or FALSE: 'maybe'"),
    (10, "output_tokens: not a whole non-negative number: '12.5'"),
    (11, "output_tokens: not a whole non-negative number: '-3'"),
]


def test_bad_rows_are_reported_with_file_and_line_and_never_counted(tmp_path: Path) -> None:
    path = bad_export(tmp_path)
    rollup = reference([path])
    assert [(p.file, p.line, p.reason) for p in rollup.problems] == [
        (str(path), line, reason) for line, reason in EXPECTED_PROBLEMS
    ]
    assert metric(rollup.totals[key()], "input_tokens") == 101
    assert rollup.rows == 10


def test_duckdb_reader_agrees_with_the_reference(tmp_path: Path) -> None:
    path = bad_export(tmp_path)
    rollup = reference([path])
    totals, load = via_duckdb(path)
    assert totals == rollup.totals
    assert [(p.line, p.reason) for p in load.problems] == EXPECTED_PROBLEMS
    assert load.problem_count == rollup.problem_count
    assert load.rows == rollup.rows
    assert load.buckets == rollup.buckets[str(path)]


def test_missing_required_column_is_one_problem_on_line_1(tmp_path: Path) -> None:
    header = [c for c in HEADER if c != "user_id"]
    path = write_export(tmp_path / "e.csv", [bucket_row()], header)
    rollup = reference([path])
    message = missing_columns_message(["user_id"])
    assert message.startswith("header lacks column(s): user_id; ")
    assert [(p.line, p.reason) for p in rollup.problems] == [(1, message)]
    _, load = via_duckdb(path)
    assert [(p.line, p.reason) for p in load.problems] == [(1, message)]


def test_epoch_columns_serve_when_iso_columns_are_absent(tmp_path: Path) -> None:
    header = [c for c in HEADER if not c.endswith("_iso")]
    path = write_export(tmp_path / "e.csv", [bucket_row(input_tokens=9)], header)
    assert metric(reference([path]).totals[key()], "input_tokens") == 9
    totals, _ = via_duckdb(path)
    assert metric(totals[key()], "input_tokens") == 9


def test_two_copies_of_one_export_are_a_problem(tmp_path: Path) -> None:
    a = write_export(tmp_path / "a.csv", [bucket_row(), bucket_row(user="user_b")])
    b = write_export(tmp_path / "b.csv", [bucket_row(), bucket_row(user="user_b")])
    rollup = reference([a, b])
    assert [p.reason for p in rollup.problems] == [
        f"overlaps {a} at 2025-10-07T00:00:00Z on 2 key-day(s) (first: 2025-10-07 "
        "project=proj_a key=key_a user=user_a model=gpt-4o tier=default batch=false): "
        "the same usage would count twice"
    ]


def test_one_export_per_organisation_over_the_same_days_adds_up(tmp_path: Path) -> None:
    """The app has one organisation per admin key: one file per project, same days."""
    a = write_export(tmp_path / "org-a.csv", [bucket_row(project="proj_a", input_tokens=5)])
    b = write_export(tmp_path / "org-b.csv", [bucket_row(project="proj_b", input_tokens=7)])
    rollup = reference([a, b])
    assert rollup.problems == []
    assert sum(v[0] for v in rollup.totals.values()) == 12


def test_the_same_key_in_hours_that_do_not_overlap_adds_up(tmp_path: Path) -> None:
    midnight = datetime(2025, 10, 7, tzinfo=UTC)
    a = write_export(
        tmp_path / "am.csv",
        [bucket_row(midnight + timedelta(hours=h), timedelta(hours=1)) for h in range(12)],
    )
    b = write_export(
        tmp_path / "pm.csv",
        [bucket_row(midnight + timedelta(hours=h), timedelta(hours=1)) for h in range(12, 24)],
    )
    assert reference([a, b]).problems == []


def test_time_overlaps_names_the_days_shared() -> None:
    d7 = datetime(2025, 10, 7, tzinfo=UTC)
    day = timedelta(days=1)
    per_file = {
        "a": {(d7, d7 + day), (d7 + day, d7 + 2 * day)},
        "b": {(d7 + day + timedelta(hours=3), d7 + day + timedelta(hours=4))},
        "c": {(d7 + 5 * day, d7 + 6 * day)},
    }
    assert time_overlaps(per_file) == [
        TimeOverlap("a", "b", d7 + day + timedelta(hours=3), frozenset({DAY + timedelta(1)}))
    ]


# -- admin-API JSON pages ------------------------------------------------------------------------


def page(buckets: list[dict[str, object]], has_more: bool = False) -> dict[str, object]:
    return {"object": "page", "data": buckets, "has_more": has_more, "next_page": None}


def bucket(
    start: datetime, results: list[dict[str, object]], width: timedelta = timedelta(days=1)
) -> dict[str, object]:
    return {
        "object": "bucket",
        "start_time": int(start.timestamp()),
        "end_time": int((start + width).timestamp()),
        "results": results,
    }


def result(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "object": "organization.usage.completions.result",
        "input_tokens": 100, "output_tokens": 10, "input_cached_tokens": 0,
        "input_audio_tokens": 0, "output_audio_tokens": 0, "num_model_requests": 1,
        "project_id": "proj_a", "user_id": "user_a", "api_key_id": "key_a",
        "model": "gpt-4o", "batch": False, "service_tier": "default",
    }  # fmt: skip
    base.update(overrides)
    return base


def test_json_pages_as_page_array_and_lines(tmp_path: Path) -> None:
    midnight = datetime(2025, 10, 7, tzinfo=UTC)
    p1 = page([bucket(midnight, [result(), result(input_tokens=50)])], has_more=True)
    p2 = page([bucket(midnight + timedelta(days=1), [])])
    single = tmp_path / "one.json"
    single.write_text(json.dumps(p1))
    array = tmp_path / "array.json"
    array.write_text(json.dumps([p1, p2], indent=2))
    lines = tmp_path / "pages.jsonl"
    lines.write_text(json.dumps(p1) + "\n" + json.dumps(p2) + "\n")
    for path in (single, array, lines):
        assert sniff_export(path).kind == "json"
        rollup = reference([path])
        assert metric(rollup.totals[key()], "input_tokens") == 150, path
        assert rollup.problem_count == 0
    assert reference([lines]).empty_bucket_rows == 1
    assert day_coverage(reference([lines]).buckets[str(lines)]) == {
        DAY: 86_400,
        DAY + timedelta(days=1): 86_400,
    }


def test_json_problems_say_where(tmp_path: Path) -> None:
    midnight = datetime(2025, 10, 7, tzinfo=UTC)
    path = tmp_path / "pages.jsonl"
    path.write_text(
        json.dumps(page([bucket(midnight, [result()])]))
        + "\n"
        + json.dumps(page([bucket(midnight, [result(input_tokens="lots")])]))
        + "\n"
        + json.dumps(page([bucket(midnight + timedelta(hours=23), [result()], timedelta(hours=2))]))
        + "\n"
    )
    problems = [p for p in read_json_pages(path) if isinstance(p, ExportProblem)]
    assert [(p.line, p.reason) for p in problems] == [
        (2, "page 1 bucket 1 result 1: input_tokens: not a whole non-negative number: 'lots'"),
        (
            3,
            "page 1 bucket 1: bucket crosses midnight UTC: "
            "2025-10-07T23:00:00Z .. 2025-10-08T01:00:00Z",
        ),
    ]


def test_parse_count_rules() -> None:
    assert parse_count("59200.0") == 59200
    assert parse_count(" 7 ") == 7
    assert parse_count("") == 0
    for bad in ("12.5", "-1", "nan", "inf", "abc", "1e400", "99999999999999999999"):
        assert parse_count(bad) is None, bad


# -- the DuckDB fast path and its fallback -------------------------------------------------------


def staged(path: Path) -> tuple[dict[DayKey, list[int]], StagedExport]:
    con = duckdb.connect()
    st = stage_delimited_duckdb(con, path, "rows")
    totals = {}
    for row in relation_rows(con, st.relation):
        totals[DayKey(*row[:7])] = [int(v) for v in row[9:]]
    return totals, st


def test_a_clean_file_takes_the_fast_path_and_agrees(tmp_path: Path) -> None:
    rows = [bucket_row(user=f"user_{i}", input_tokens=f"{i}.0") for i in range(5)]
    path = write_export(tmp_path / "e.csv", [*rows, empty_row()])  # type: ignore[list-item]
    totals, st = staged(path)
    assert st.fast and st.unique
    rollup = reference([path])
    assert totals == rollup.totals
    assert st.load.rows == rollup.rows and st.load.empty_bucket_rows == 1
    assert st.load.buckets == rollup.buckets[str(path)]


def test_a_bad_file_falls_back_to_the_exact_reader(tmp_path: Path) -> None:
    _, st = staged(bad_export(tmp_path))
    assert not st.fast
    assert [(p.line, p.reason) for p in st.load.problems] == EXPECTED_PROBLEMS


@pytest.mark.parametrize(
    "cell",
    ["102.5", "-1.0", "-0.0", "4294967295.0", "4294967295.4", "4294967295.6", "1e3", "nan", "inf"],
)
def test_the_typed_pass_keeps_only_whole_counts_it_can_store_as_the_reference_does(
    tmp_path: Path, cell: str
) -> None:
    """The typed pass's ``ok``: a count is kept when it casts to UINTEGER unchanged; a
    fraction, a negative, NaN, infinity or a count past 2^32 - 1 sends the file to the exact
    reader, which decides as the reference does (a bad row, or a count it keeps)."""
    path = write_export(tmp_path / "e.csv", [bucket_row(input_tokens=cell), bucket_row(user="u2")])
    totals, st = staged(path)
    rollup = reference([path])
    assert totals == rollup.totals
    assert st.load.problem_count == rollup.problem_count
    whole = cell in ("-0.0", "4294967295.0", "1e3")
    assert st.fast is whole


@pytest.mark.parametrize(
    "row",
    [
        bucket_row(input_tokens=str(2**32)),  # beyond the fast path's UINTEGER: exact path
        {**bucket_row(), "start_time_iso": ""},  # ISO empty: the epoch cell decides
    ],
)
def test_what_the_fast_path_does_not_decide_is_read_exactly(
    tmp_path: Path, row: dict[str, str]
) -> None:
    path = write_export(tmp_path / "e.csv", [row, bucket_row(user="user_b")])
    totals, st = staged(path)
    assert not st.fast
    rollup = reference([path])
    assert rollup.problem_count == 0 and st.load.problem_count == 0
    assert totals == rollup.totals
