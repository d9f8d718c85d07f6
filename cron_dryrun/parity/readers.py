"""The pure-Python reference readers and their roll-up into UTC days.

A small, streaming reader for the dashboard CSV, its TSV paste and admin-API JSON pages
(the only reader for JSON); ``DailyRollup`` sums rows per key-day and counts what is not
compared. Tests hold the DuckDB reader (staging) to the same rows, problems and lines.
Also here: day coverage and the overlap of two files (the same usage counted twice).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cron_dryrun.parity.formats import (
    BATCH_VALUES,
    CUT_SHORT,
    GZIP_ENDS_EARLY,
    JSON_ENDS_EARLY,
    JSON_METRICS,
    METRICS,
    PROBLEM_SAMPLE,
    BucketRow,
    DayKey,
    ExportFormat,
    ExportProblem,
    bucket_problem,
    open_export_text,
    parse_count,
    parse_delimited_row,
    parse_time,
    sniff_export,
    stamp,
)

if TYPE_CHECKING:
    pass


def read_delimited(
    path: Path, fmt: ExportFormat | None = None
) -> Iterator[BucketRow | ExportProblem]:
    """Stream a dashboard CSV (or TSV paste), one row at a time."""
    fmt = fmt or sniff_export(path)
    name = str(path)
    problem = fmt.problem(name)
    if problem is not None:
        yield problem
        return
    with open_export_text(path) as fh:
        reader = csv.reader(fh, delimiter=fmt.delimiter)
        next(reader, None)
        line = reader.line_num
        for values in reader:
            record_line = line + 1  # where this record starts (line_num is where it ends)
            line = reader.line_num
            if not values or (len(values) == 1 and not values[0].strip()):
                continue  # a blank line is not a row
            yield parse_delimited_row(name, record_line, fmt.columns, fmt.metrics, values)


class JsonEndsEarly(ValueError):
    """The JSON text stops inside a value (at ``line``, its last): a download cut short."""

    def __init__(self, line: int) -> None:
        super().__init__(f"{JSON_ENDS_EARLY} at line {line}")
        self.line = line


def _iter_json_values(fh: io.TextIOBase, chunk_size: int = 1 << 20) -> Iterator[tuple[int, Any]]:
    """Top-level JSON values one after another (one page, an array, or JSON lines), with line."""
    decoder = json.JSONDecoder()
    buffer = ""
    line = 1
    eof = False
    while True:
        stripped = buffer.lstrip()
        line += buffer[: len(buffer) - len(stripped)].count("\n")
        buffer = stripped
        if not buffer:
            if eof:
                return
            chunk = fh.read(chunk_size)
            eof = not chunk
            buffer += chunk
            continue
        try:
            value, end = decoder.raw_decode(buffer)
        except json.JSONDecodeError as exc:
            if eof and (exc.msg.startswith("Unterminated string") or not buffer[exc.pos :].strip()):
                # the text stops inside its last value: what a download cut short leaves
                raise JsonEndsEarly(line + buffer.rstrip().count(chr(10))) from None
            if eof:
                raise ValueError(
                    f"line {line + buffer[: exc.pos].count(chr(10))}: {exc.msg}"
                ) from None
            chunk = fh.read(chunk_size)
            eof = not chunk
            buffer += chunk
            continue
        yield line, value
        line += buffer[:end].count("\n")
        buffer = buffer[end:]


def _json_pages(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        yield from value
    else:
        yield value


def _json_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def read_json_pages(path: Path) -> Iterator[BucketRow | ExportProblem]:
    """Stream admin-API pages: a page, an array of pages, or one page per line.

    Problems carry the line the page starts on and say which bucket/result.
    """
    name = str(path)
    with open_export_text(path, newline=None) as fh:
        try:
            for line, value in _iter_json_values(fh):
                for page_no, page in enumerate(_json_pages(value), 1):
                    yield from _read_json_page(name, line, page_no, page)
        except JsonEndsEarly as exc:
            yield ExportProblem(name, exc.line, f"{exc}: {CUT_SHORT}", "file")
        except ValueError as exc:
            yield ExportProblem(name, 0, f"not valid JSON: {exc}")
        except EOFError:  # gzip's: the stream has no end
            yield ExportProblem(name, 0, f"{GZIP_ENDS_EARLY}: {CUT_SHORT}", "file")


def _read_json_page(
    name: str, line: int, page_no: int, page: Any
) -> Iterator[BucketRow | ExportProblem]:
    if (
        not isinstance(page, dict)
        or page.get("object") != "page"
        or not isinstance(page.get("data"), list)
    ):
        yield ExportProblem(name, line, f"page {page_no}: not an admin-API page object")
        return
    for b_no, bucket in enumerate(page["data"], 1):
        where = f"page {page_no} bucket {b_no}"
        if not isinstance(bucket, dict):
            yield ExportProblem(name, line, f"{where}: not a bucket object")
            continue
        start = parse_time(None, _json_text(bucket.get("start_time")))
        end = parse_time(None, _json_text(bucket.get("end_time")))
        if start is None or end is None:
            yield ExportProblem(
                name,
                line,
                f"{where}: unparseable start_time/end_time: "
                f"{bucket.get('start_time')!r} .. {bucket.get('end_time')!r}",
            )
            continue
        problem = bucket_problem(start, end)
        if problem:
            yield ExportProblem(name, line, f"{where}: {problem}")
            continue
        results = bucket.get("results") or []
        if not results:  # an empty bucket still proves the time was covered
            yield BucketRow(
                name, line, start, end, "", "", "", "", "", False, dict.fromkeys(JSON_METRICS, 0)
            )
            continue
        for r_no, result in enumerate(results, 1):
            yield _json_result(name, line, f"{where} result {r_no}", start, end, result)


def _json_result(
    name: str, line: int, where: str, start: datetime, end: datetime, result: Any
) -> BucketRow | ExportProblem:
    if not isinstance(result, dict):
        return ExportProblem(name, line, f"{where}: not a result object")
    counts: dict[str, int] = {}
    for metric in JSON_METRICS:
        raw = result.get(metric)
        count = 0 if raw is None else parse_count(str(raw)) if not isinstance(raw, bool) else None
        if count is None:
            return ExportProblem(
                name, line, f"{where}: {metric}: not a whole non-negative number: {raw!r}"
            )
        counts[metric] = count
    raw_batch = result.get("batch")
    batch = (
        raw_batch
        if isinstance(raw_batch, bool)
        else BATCH_VALUES.get(_json_text(raw_batch).lower())
    )
    if batch is None:
        return ExportProblem(name, line, f"{where}: batch: not true or false: {raw_batch!r}")
    return BucketRow(
        name,
        line,
        start,
        end,
        _json_text(result.get("project_id")),
        _json_text(result.get("api_key_id")),
        _json_text(result.get("user_id")),
        _json_text(result.get("model")),
        _json_text(result.get("service_tier")),
        batch,
        counts,
    )


def read_export(path: Path) -> Iterator[BucketRow | ExportProblem]:
    """Any export file, by content: JSON pages or a CSV/TSV with a header."""
    fmt = sniff_export(path)
    if fmt.kind == "json" and fmt.unreadable is None:
        return read_json_pages(path)
    return read_delimited(path, fmt)


@dataclass
class DailyRollup:
    """What one or more export files say, per key and UTC day, plus everything not counted."""

    metrics: tuple[str, ...] = METRICS
    totals: dict[DayKey, list[int]] = field(default_factory=dict)  # aligned to METRICS
    record_counts: dict[DayKey, int] = field(default_factory=dict)
    buckets: dict[str, set[tuple[datetime, datetime]]] = field(default_factory=dict)
    problems: list[ExportProblem] = field(default_factory=list)
    problem_count: int = 0
    rows: int = 0
    empty_bucket_rows: int = 0
    rows_without_ids: int = 0
    without_ids_totals: list[int] = field(default_factory=lambda: [0] * len(METRICS))
    rows_outside_range: int = 0
    # key-days per file, for telling an overlap (same key twice) from files of other projects
    file_keys: dict[str, set[DayKey]] = field(default_factory=dict)

    def add_problem(self, problem: ExportProblem) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEM_SAMPLE:
            self.problems.append(problem)

    def add(
        self, item: BucketRow | ExportProblem, first_day: date | None, last_day: date | None
    ) -> None:
        self.rows += 1
        if isinstance(item, ExportProblem):
            self.add_problem(item)
            return
        self.buckets.setdefault(item.file, set()).add((item.start, item.end))
        day = item.day
        if (first_day and day < first_day) or (last_day and day > last_day):
            self.rows_outside_range += 1
            return
        values = [item.metrics.get(m, 0) for m in METRICS]
        if not item.has_ids:
            # the app skips these silently; we count them and keep their usage visible
            if item.is_empty:
                self.empty_bucket_rows += 1
            else:
                self.rows_without_ids += 1
                self.without_ids_totals = [
                    a + b for a, b in zip(self.without_ids_totals, values, strict=True)
                ]
            return
        key = item.key()
        self.file_keys.setdefault(item.file, set()).add(key)
        current = self.totals.get(key)
        if current is None:
            self.totals[key] = values
        else:  # repeated keys in one bucket, or buckets of one day: they add up
            self.totals[key] = [a + b for a, b in zip(current, values, strict=True)]
        self.record_counts[key] = self.record_counts.get(key, 0) + 1


def rollup_daily(
    paths: Sequence[Path], first_day: date | None = None, last_day: date | None = None
) -> DailyRollup:
    """The reference roll-up: every file streamed through the pure-Python readers."""
    rollup = DailyRollup()
    metric_sets = []
    for path in paths:
        fmt = sniff_export(path)
        if fmt.problem(str(path)) is None:
            metric_sets.append(set(fmt.metrics))
        for item in read_export(path):
            rollup.add(item, first_day, last_day)
    rollup.metrics = common_metrics(metric_sets)

    def shared(first: str, second: str, days: frozenset[date]) -> tuple[int, DayKey | None]:
        a, b = rollup.file_keys.get(first, set()), rollup.file_keys.get(second, set())
        both = sorted(k for k in a & b if k.day in days)
        return len(both), (both[0] if both else None)

    for problem in overlapping_buckets(rollup.buckets, shared):
        rollup.add_problem(problem)
    return rollup


def common_metrics(metric_sets: Sequence[set[str]]) -> tuple[str, ...]:
    """Only metrics every file reports can be compared (JSON pages carry fewer)."""
    if not metric_sets:
        return ()
    common = set.intersection(*metric_sets)
    return tuple(m for m in METRICS if m in common)


def day_coverage(buckets: Iterable[tuple[datetime, datetime]]) -> dict[date, int]:
    """Seconds of each UTC day covered by the union of (single-day) buckets."""
    by_day: dict[date, list[tuple[datetime, datetime]]] = {}
    for start, end in buckets:
        by_day.setdefault(start.date(), []).append((start, end))
    coverage: dict[date, int] = {}
    for day, spans in by_day.items():
        spans.sort()
        covered = 0.0
        cur_start, cur_end = spans[0]
        for start, end in spans[1:]:
            if start <= cur_end:
                cur_end = max(cur_end, end)
            else:
                covered += (cur_end - cur_start).total_seconds()
                cur_start, cur_end = start, end
        covered += (cur_end - cur_start).total_seconds()
        coverage[day] = int(covered)
    return coverage


@dataclass(frozen=True)
class TimeOverlap:
    """Two files whose buckets cover some of the same time, on these UTC days."""

    first_file: str
    second_file: str
    at: datetime  # where the overlap starts
    days: frozenset[date]


def _merged_spans(spans: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        elif merged and start == merged[-1][1]:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def time_overlaps(per_file: dict[str, set[tuple[datetime, datetime]]]) -> list[TimeOverlap]:
    """File pairs whose buckets share time (the days they share it on, and where it starts).

    Sharing time alone is normal: one export per organisation covers the same days for
    other projects. Only a key-day in both files of a pair would count twice
    (``overlapping_buckets``).
    """
    merged = {f: _merged_spans(spans) for f, spans in per_file.items()}
    files = sorted(merged)
    found: list[TimeOverlap] = []
    for i, first in enumerate(files):
        for second in files[i + 1 :]:
            a, b = merged[first], merged[second]
            days: set[date] = set()
            at: datetime | None = None
            x = y = 0
            while x < len(a) and y < len(b):
                start, end = max(a[x][0], b[y][0]), min(a[x][1], b[y][1])
                if start < end:
                    at = start if at is None else min(at, start)
                    day = start.date()
                    while datetime(day.year, day.month, day.day, tzinfo=UTC) < end:
                        days.add(day)
                        day += timedelta(days=1)
                if a[x][1] <= b[y][1]:
                    x += 1
                else:
                    y += 1
            if at is not None:
                found.append(TimeOverlap(first, second, at, frozenset(days)))
    return found


# how many key-days two files share on some days, and the first of them (None when none)
SharedKeyDays = Callable[[str, str, frozenset[date]], tuple[int, DayKey | None]]


def overlapping_buckets(
    per_file: dict[str, set[tuple[datetime, datetime]]], shared_key_days: SharedKeyDays
) -> list[ExportProblem]:
    """The same bucket and the same grouping key in two files: that usage would count twice.

    Files for different projects (one export per organisation) over the same days are
    normal and add up; two copies of one file are caught.
    """
    problems: list[ExportProblem] = []
    for overlap in time_overlaps(per_file):
        count, first = shared_key_days(overlap.first_file, overlap.second_file, overlap.days)
        problem = overlap_problem(overlap, count, first)
        if problem is not None:
            problems.append(problem)
    return problems


def overlap_problem(overlap: TimeOverlap, count: int, first: DayKey | None) -> ExportProblem | None:
    """Two files' buckets overlap in time; ``count`` key-days of theirs are the same."""
    if not count:
        return None
    example = f" (first: {first.label()})" if first is not None else ""
    return ExportProblem(
        overlap.second_file,
        0,
        f"overlaps {overlap.first_file} at {stamp(overlap.at)} on {count} key-day(s)"
        f"{example}: the same usage would count twice",
        "overlap",
    )
