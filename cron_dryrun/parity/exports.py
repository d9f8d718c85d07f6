"""OpenAI usage export readers -> rows rolled up into UTC days (contract.md section 5).

Two readers with one meaning:

- a small, streaming pure-Python reader (dashboard CSV, its TSV paste, admin-API JSON
  pages); it is the reference, and the only reader for JSON pages;
- a DuckDB reader for CSV/TSV at scale (``stage_delimited_duckdb``): a pure-Python csv
  pass over 1M rows alone takes 2.6 s, DuckDB parses, validates and rolls up in SQL.

Tests hold the two to the same rows, problems and line numbers. Neither reader ever
changes a total silently: a bad row (wrong column count, unparseable number or time,
a bucket crossing midnight) is kept out of the totals and reported with file and line.
Nothing here talks to a database server; DuckDB is an in-process engine over files.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import json
import math
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import duckdb

# (export column, usage_events column): contract.md section 6.
METRIC_COLUMNS: tuple[tuple[str, str], ...] = (
    ("input_tokens", "tokens_in"),
    ("output_tokens", "tokens_out"),
    ("input_cached_tokens", "input_cached_tokens"),
    ("input_uncached_tokens", "input_uncached_tokens"),
    ("input_text_tokens", "input_text_tokens"),
    ("output_text_tokens", "output_text_tokens"),
    ("input_cached_text_tokens", "input_cached_text_tokens"),
    ("input_audio_tokens", "input_audio_tokens"),
    ("input_cached_audio_tokens", "input_cached_audio_tokens"),
    ("output_audio_tokens", "output_audio_tokens"),
    ("input_image_tokens", "input_image_tokens"),
    ("input_cached_image_tokens", "input_cached_image_tokens"),
    ("output_image_tokens", "output_image_tokens"),
    ("num_model_requests", "num_model_requests"),
)
METRICS: tuple[str, ...] = tuple(name for name, _ in METRIC_COLUMNS)
TOKEN_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m != "num_model_requests")
EXACT_METRICS: tuple[str, ...] = ("num_model_requests",)
# What an admin-API completions result carries (contract.md section 5).
JSON_METRICS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "input_cached_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "num_model_requests",
)
ID_COLUMNS = ("project_id", "api_key_id", "user_id")
TIME_COLUMNS = ("start_time", "end_time", "start_time_iso", "end_time_iso")
KEY_TEXT_COLUMNS = ("project_id", "api_key_id", "user_id", "model", "service_tier")
# Daily totals as a flat row: the layout both sides are loaded into DuckDB with.
TOTALS_COLUMNS: tuple[str, ...] = (
    "day",
    *KEY_TEXT_COLUMNS,
    "batch",
    "aligned",
    "record_count",
    *METRICS,
)
SECONDS_PER_DAY = 86_400
MAX_EXACT = 2**53  # counts above this do not survive a float; reject rather than round
BATCH_VALUES = {"true": True, "false": False, "1": True, "0": False, "": False}
# Problems kept in memory per file; the rest are only counted (bounded at any scale).
PROBLEM_SAMPLE = 1000
# a row or key-day with any of the three ids: only those are compared (standard-mode keys have none)
HAS_IDS_SQL = "(project_id <> '' OR api_key_id <> '' OR user_id <> '')"


class DayKey(NamedTuple):
    """One comparison key: a UTC day plus contract.md section 6's key fields."""

    day: date
    project_id: str
    api_key_id: str
    user_id: str
    model: str
    service_tier: str
    batch: bool

    @property
    def has_ids(self) -> bool:
        return bool(self.project_id or self.api_key_id or self.user_id)

    def label(self) -> str:
        tier = self.service_tier or "-"
        return (
            f"{self.day.isoformat()} project={self.project_id or '-'} key={self.api_key_id or '-'} "
            f"user={self.user_id or '-'} model={self.model or '-'} tier={tier} "
            f"batch={str(self.batch).lower()}"
        )


@dataclass(frozen=True)
class ExportProblem:
    """A row (or file) that could not be read: never counted, always reported.

    ``kind``: "row" (one bad row), "file" (the whole file: empty, wrong header, not
    readable) or "overlap" (two files holding the same usage).
    """

    file: str
    line: int
    reason: str
    kind: str = "row"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class BucketRow:
    """One result row of one bucket, times as aware UTC."""

    file: str
    line: int
    start: datetime
    end: datetime
    project_id: str
    api_key_id: str
    user_id: str
    model: str
    service_tier: str
    batch: bool
    metrics: dict[str, int]

    @property
    def day(self) -> date:
        return self.start.date()

    @property
    def has_ids(self) -> bool:
        return bool(self.project_id or self.api_key_id or self.user_id)

    @property
    def is_empty(self) -> bool:
        """An empty bucket: no ids, no model and no usage (a real export's "no usage" row)."""
        return not self.has_ids and not self.model and not any(self.metrics.values())

    def key(self) -> DayKey:
        return DayKey(
            self.day,
            self.project_id,
            self.api_key_id,
            self.user_id,
            self.model,
            self.service_tier,
            self.batch,
        )


@dataclass(frozen=True)
class ExportFormat:
    kind: str  # "csv", "tsv" or "json"
    columns: tuple[str, ...]  # header names, normalised; empty for json
    metrics: tuple[str, ...]  # metrics this file carries
    missing: tuple[str, ...] = ()  # required columns not in the header
    compression: str = "none"  # "gzip" when the bytes are gzip (.csv.gz, or saved so)
    unreadable: str | None = None  # why the file cannot be read at all (empty, bad gzip, ...)

    @property
    def delimiter(self) -> str:
        return "\t" if self.kind == "tsv" else ","

    def problem(self, file: str) -> ExportProblem | None:
        """The file-level problem that stops every row from being read, if any."""
        if self.unreadable:
            return ExportProblem(file, 0, self.unreadable, "file")
        if self.missing:
            return ExportProblem(file, 1, missing_columns_message(self.missing), "file")
        return None

    def duckdb_options(self) -> str:
        """Extra read_csv options for this file (gzip is read by DuckDB directly)."""
        return ", compression='gzip'" if self.compression == "gzip" else ""


# -- sniffing -------------------------------------------------------------------------------------


def _normalise_header(names: Sequence[str]) -> tuple[str, ...]:
    return tuple(n.strip().lstrip("\ufeff").strip().lower() for n in names)


def _missing_columns(columns: Sequence[str]) -> tuple[str, ...]:
    cols = set(columns)
    missing = [c for c in (*ID_COLUMNS, "model") if c not in cols]
    if not cols & {"start_time_iso", "start_time"}:
        missing.append("start_time_iso or start_time")
    if not cols & {"end_time_iso", "end_time"}:
        missing.append("end_time_iso or end_time")
    return tuple(missing)


GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """gzip by content (browsers save ``.csv.gz``, sometimes under a ``.csv`` name)."""
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def open_export_text(path: Path, newline: str | None = "") -> io.TextIOBase:
    """An export file as text: gzip decompressed on the fly, a UTF-8 BOM dropped."""
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=newline)
    return open(path, encoding="utf-8-sig", newline=newline)


def export_file_message(problem: ExportProblem) -> str:
    """How a file-level problem is said, by the suite and by ``cron-dryrun diff`` alike."""
    return f"export file {problem.file}: {problem.reason}"


def missing_columns_message(missing: Sequence[str]) -> str:
    """The one message for an export header without the columns parity needs (suite and diff)."""
    return (
        f"header lacks column(s): {', '.join(missing)}; is this the OpenAI completions usage "
        "export? (download it again from the usage dashboard: its header starts with "
        "start_time,end_time,start_time_iso,end_time_iso,project_id,...)"
    )


def read_export_head(path: Path, size: int = 65536) -> tuple[str, str, str | None]:
    """(text head, compression, why unreadable): the first ``size`` characters, decoded."""
    compression = "none"
    try:
        compression = "gzip" if is_gzip(path) else "none"
        with open_export_text(path) as fh:
            head = fh.read(size)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        return "", compression, f"not a readable gzip file ({exc}): download the export again"
    except UnicodeDecodeError as exc:
        return (
            "",
            compression,
            f"not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset "
            f"{exc.start}): is this the OpenAI usage export (CSV, TSV or JSON)?",
        )
    if not head.strip():
        return head, compression, "empty file: download the export again"
    return head, compression, None


def sniff_export(path: Path) -> ExportFormat:
    """JSON pages, or a delimited export whose header decides comma or tab."""
    head, compression, unreadable = read_export_head(path)
    if unreadable:
        return ExportFormat("csv", (), (), (), compression, unreadable)
    stripped = head.lstrip()
    if stripped.startswith(("{", "[")):
        return ExportFormat("json", (), JSON_METRICS, compression=compression)
    first = head.splitlines()[0] if head else ""
    # a TSV paste: the header has tabs and splits into known names on them
    kind = "tsv" if first.count("\t") > first.count(",") else "csv"
    delimiter = "\t" if kind == "tsv" else ","
    columns = _normalise_header(next(csv.reader([first], delimiter=delimiter), []))
    metrics = tuple(m for m in METRICS if m in columns)
    return ExportFormat(kind, columns, metrics, _missing_columns(columns), compression)


# -- cell parsing (the reference rules; the DuckDB SQL below mirrors them) -------------------------


def parse_count(text: str) -> int | None:
    """A whole, non-negative count: '59200.0' -> 59200; '' -> 0; anything else -> None."""
    cell = text.strip()
    if not cell:
        return 0
    try:
        value = float(cell)  # same acceptance as DuckDB's TRY_CAST(... AS DOUBLE)
    except ValueError:
        return None
    if not math.isfinite(value) or value < 0 or value != math.floor(value) or value > MAX_EXACT:
        return None
    return int(value)


def parse_time(iso_text: str | None, epoch_text: str | None) -> datetime | None:
    """The ISO cell when there is one (Z, +00:00, any offset), else epoch seconds; aware UTC."""
    if iso_text is not None and iso_text.strip():
        try:
            value = datetime.fromisoformat(iso_text.strip())
        except ValueError:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if epoch_text is not None and epoch_text.strip():
        try:
            return datetime.fromtimestamp(float(epoch_text.strip()), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def bucket_problem(start: datetime, end: datetime) -> str | None:
    """Buckets must lie inside one UTC day, so they roll up into exactly one day."""
    if end <= start:
        return f"bucket ends before it starts: {_stamp(start)} .. {_stamp(end)}"
    if (end - timedelta(microseconds=1)).date() != start.date():
        return f"bucket crosses midnight UTC: {_stamp(start)} .. {_stamp(end)}"
    return None


def _time_cell(cells: dict[str, str], name: str) -> tuple[str | None, str | None]:
    return cells.get(f"{name}_iso"), cells.get(name)


def _time_label(cells: dict[str, str], name: str) -> str:
    iso_cell, epoch_cell = _time_cell(cells, name)
    if iso_cell is not None and iso_cell.strip():
        return f"{name}_iso: '{iso_cell.strip()}'"
    if epoch_cell is not None and epoch_cell.strip():
        return f"{name}: '{epoch_cell.strip()}'"
    return f"{name}: missing"


def parse_delimited_row(
    file: str, line: int, header: Sequence[str], metrics: Sequence[str], values: Sequence[str]
) -> BucketRow | ExportProblem:
    """One data row -> a BucketRow, or the first thing wrong with it (checked in a fixed order)."""
    if len(values) < len(header):
        return ExportProblem(file, line, f"expected {len(header)} columns, found {len(values)}")
    if len(values) > len(header):
        return ExportProblem(file, line, f"expected {len(header)} columns, found more")
    cells = dict(zip(header, values, strict=True))
    times: list[datetime] = []
    for name in ("start_time", "end_time"):
        value = parse_time(*_time_cell(cells, name))
        if value is None:
            return ExportProblem(file, line, f"unparseable time in {_time_label(cells, name)}")
        times.append(value)
    start, end = times
    problem = bucket_problem(start, end)
    if problem:
        return ExportProblem(file, line, problem)
    batch_cell = cells.get("batch", "").strip()
    batch = BATCH_VALUES.get(batch_cell.lower())
    if batch is None:
        return ExportProblem(file, line, f"batch: not TRUE or FALSE: '{batch_cell}'")
    counts: dict[str, int] = {}
    for metric in metrics:
        count = parse_count(cells[metric])
        if count is None:
            return ExportProblem(
                file, line, f"{metric}: not a whole non-negative number: '{cells[metric].strip()}'"
            )
        counts[metric] = count
    return BucketRow(
        file,
        line,
        start,
        end,
        cells["project_id"].strip(),
        cells["api_key_id"].strip(),
        cells["user_id"].strip(),
        cells["model"].strip(),
        cells.get("service_tier", "").strip(),
        batch,
        counts,
    )


# -- pure-Python streaming readers ----------------------------------------------------------------


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
        except ValueError as exc:
            yield ExportProblem(name, 0, f"not valid JSON: {exc}")


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


EXPORT_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".jsonl")


def _export_suffix(path: Path) -> bool:
    """.csv, .tsv, .txt, .json, .jsonl, and each of them gzipped (.csv.gz)."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return bool(suffixes) and suffixes[-1] in EXPORT_SUFFIXES


def expand_export_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a folder contributes its .csv, .tsv, .txt and .json files, sorted."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and _export_suffix(p)))
        else:
            files.append(path)
    return files


# -- roll-up into UTC days ------------------------------------------------------------------------


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
        if not count:
            continue
        example = f" (first: {first.label()})" if first is not None else ""
        problems.append(
            ExportProblem(
                overlap.second_file,
                0,
                f"overlaps {overlap.first_file} at {_stamp(overlap.at)} on {count} key-day(s)"
                f"{example}: the same usage would count twice",
                "overlap",
            )
        )
    return problems


def write_totals_csv(rollup: DailyRollup, out: io.TextIOBase) -> None:
    """The roll-up as TOTALS_COLUMNS rows (the layout DuckDB loads both sides with)."""
    writer = csv.writer(out, lineterminator="\n")
    for key, values in rollup.totals.items():
        writer.writerow(
            [
                key.day.isoformat(),
                key.project_id,
                key.api_key_id,
                key.user_id,
                key.model,
                key.service_tier,
                int(key.batch),
                1,
                rollup.record_counts[key],
                *values,
            ]
        )


# -- DuckDB reader (scale) ------------------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _c(name: str) -> str:
    """The trimmed cell of ``name`` as layer 1 of delimited_rows_sql exposes it."""
    return _q("c_" + name)


def _sql_time(
    columns: Sequence[str], name: str, cell: Callable[[str], str] = _c
) -> tuple[str, str]:
    """(value expr, label expr) over layer-1 cells, mirroring parse_time/_time_label."""
    iso_col, epoch_col = f"{name}_iso", name
    iso_cell = cell(iso_col) if iso_col in columns else "''"
    epoch_cell = cell(epoch_col) if epoch_col in columns else "''"
    iso_expr = f"CAST(TRY_CAST({iso_cell} AS TIMESTAMPTZ) AS TIMESTAMP)"
    epoch_expr = f"CAST(to_timestamp(TRY_CAST({epoch_cell} AS DOUBLE)) AS TIMESTAMP)"
    value = (
        f"CASE WHEN {iso_cell} <> '' THEN {iso_expr} WHEN {epoch_cell} <> '' THEN {epoch_expr} END"
    )
    quote = "''''"
    label = (
        f"CASE WHEN {iso_cell} <> '' THEN '{iso_col}: ''' || {iso_cell} || {quote} "
        f"WHEN {epoch_cell} <> '' THEN '{epoch_col}: ''' || {epoch_cell} || {quote} "
        f"ELSE '{name}: missing' END"
    )
    return value, label


def delimited_rows_sql(path: Path, fmt: ExportFormat) -> str:
    """One SELECT that parses, validates and types every row of a CSV/TSV export.

    Columns: rec (record number after the header), problem (NULL when fine), bstart,
    bend, the key text columns, batch, one BIGINT per metric (0 when the file lacks
    it), and is_empty. Kept lean: every per-row expression costs ~0.1 s per 1M rows.
    """
    cols = fmt.columns
    n = len(cols)
    # empty cells read as '' (the sentinel nullstr never occurs), so NULL means "missing cell"
    # and one extra column catches rows that are too long: that is how column count is checked
    columns = ", ".join(f"{_lit(c)}: 'VARCHAR'" for c in (*cols, "__extra__"))
    reader = (
        f"read_csv({_lit(str(path))}, columns={{{columns}}}, header=true, auto_detect=false, "
        f"delim={_lit(fmt.delimiter)}, quote='\"', escape='\"', null_padding=true, "
        f"strict_mode=false, nullstr='\x01', encoding='utf-8'{fmt.duckdb_options()})"
    )
    start, start_label = _sql_time(cols, "start_time")
    end, end_label = _sql_time(cols, "end_time")
    text = {
        c: (f"trim(coalesce({_q(c)}, ''))" if c in cols else "''")
        for c in (*KEY_TEXT_COLUMNS, "batch")
    }
    present = " + ".join(f"CAST({_q(c)} IS NOT NULL AS INTEGER)" for c in cols)
    layer1 = (
        f"SELECT ordinality AS rec, {_q('__extra__')} IS NOT NULL AS too_long, "
        f"{_q(cols[-1])} IS NULL AS too_short, ({present}) AS ncells, "
        + ", ".join(f"{text[c]} AS {_q(c)}" for c in KEY_TEXT_COLUMNS)
        + f", {text['batch']} AS batch_cell"
        + "".join(f", {_q(c)} AS {_c(c)}" for c in cols if c in TIME_COLUMNS)
        + "".join(
            f", {_q(m)} AS {_c(m)}, TRY_CAST({_q(m)} AS DOUBLE) AS {_q('d_' + m)}"
            for m in fmt.metrics
        )
        + f" FROM {reader} WITH ORDINALITY"
    )
    # mirrors parse_count: NULL unless a whole, non-negative, exactly representable number
    counts = "".join(
        f", CASE WHEN {_q('d_' + m)} >= 0 AND {_q('d_' + m)} = floor({_q('d_' + m)}) "
        f"AND {_q('d_' + m)} <= {MAX_EXACT} THEN CAST({_q('d_' + m)} AS BIGINT) "
        f"WHEN {_q('d_' + m)} IS NULL AND trim(coalesce({_c(m)}, '')) = '' THEN 0 END "
        f"AS {_q('v_' + m)}"
        for m in fmt.metrics
    )
    layer2 = f"SELECT *, {start} AS bstart, {end} AS bend{counts} FROM ({layer1})"
    quote = "''''"
    metric_checks = " ".join(
        f"WHEN {_q('v_' + m)} IS NULL "
        f"THEN '{m}: not a whole non-negative number: ''' || trim({_c(m)}) || {quote}"
        for m in fmt.metrics
    )
    stamp = "'%Y-%m-%dT%H:%M:%SZ'"
    span = f"strftime(bstart, {stamp}) || ' .. ' || strftime(bend, {stamp})"
    problem = (
        f"CASE WHEN too_long THEN 'expected {n} columns, found more' "
        f"WHEN too_short THEN 'expected {n} columns, found ' || ncells "
        f"WHEN bstart IS NULL THEN 'unparseable time in ' || {start_label} "
        f"WHEN bend IS NULL THEN 'unparseable time in ' || {end_label} "
        f"WHEN bend <= bstart THEN 'bucket ends before it starts: ' || {span} "
        f"WHEN CAST(bend - INTERVAL 1 MICROSECOND AS DATE) <> CAST(bstart AS DATE) "
        f"THEN 'bucket crosses midnight UTC: ' || {span} "
        f"WHEN lower(batch_cell) NOT IN ('true', 'false', '1', '0', '') "
        f"THEN 'batch: not TRUE or FALSE: ''' || batch_cell || {quote} "
        f"{metric_checks} END"
    )
    metric_out = ", ".join(
        f"coalesce({_q('v_' + m)}, 0) AS {_q(m)}" if m in fmt.metrics else f"0::BIGINT AS {_q(m)}"
        for m in METRICS
    )
    no_usage = " AND ".join(f"coalesce({_q('v_' + m)}, 0) = 0" for m in fmt.metrics) or "true"
    return (
        f"SELECT rec, {problem} AS problem, bstart, bend, project_id, api_key_id, user_id, model, "
        f"service_tier, lower(batch_cell) IN ('true', '1') AS batch, {metric_out}, "
        f"(project_id = '' AND api_key_id = '' AND user_id = '' AND model = '' AND {no_usage}) "
        f"AS is_empty FROM ({layer2})"
    )


@dataclass
class FileLoad:
    """What loading one CSV/TSV into DuckDB found, besides the rows it inserted."""

    rows: int = 0
    empty_bucket_rows: int = 0
    rows_without_ids: int = 0
    rows_outside_range: int = 0
    without_ids_totals: list[int] = field(default_factory=lambda: [0] * len(METRICS))
    buckets: set[tuple[datetime, datetime]] = field(default_factory=set)
    problems: list[ExportProblem] = field(default_factory=list)
    problem_count: int = 0


def load_delimited_exact(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    target_table: str,
    first_day: date | None = None,
    last_day: date | None = None,
    fmt: ExportFormat | None = None,
    problem_sample: int = PROBLEM_SAMPLE,
) -> FileLoad:
    """The exact reader: every cell read as text, every rule checked row by row in SQL.

    Same rules as ``read_delimited`` + ``DailyRollup``. The file is parsed once, into
    per-bucket groups (a bad row is its own group); days, buckets, counts and problems
    are then read from those groups, which are never more than the rows. It is what
    ``stage_delimited_duckdb`` falls back to when a file is not clean: it reports every
    bad row with its line, and costs about three times the fast path.
    """
    fmt = fmt or sniff_export(path)
    name = str(path)
    load = FileLoad()
    problem = fmt.problem(name)
    if problem is not None:
        load.problem_count = 1
        load.problems.append(problem)
        return load
    rows = delimited_rows_sql(path, fmt)
    sums = ", ".join(f"CAST(sum({_q(m)}) AS BIGINT) AS {_q(m)}" for m in METRICS)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE export_groups AS SELECT problem, "
        f"CASE WHEN problem IS NOT NULL THEN rec END AS bad_rec, bstart, bend, project_id, "
        f"api_key_id, user_id, model, service_tier, batch, count(*) AS n, "
        f"count(*) FILTER (WHERE is_empty) AS empties, {sums} FROM ({rows}) GROUP BY ALL"
    )
    try:
        _read_groups(con, load, first_day, last_day, target_table)
        bad = con.execute(
            "SELECT bad_rec, problem FROM export_groups WHERE problem IS NOT NULL ORDER BY bad_rec"
        ).fetchall()
    finally:
        con.execute("DROP TABLE IF EXISTS export_groups")
    load.problem_count = len(bad)
    sample = bad[:problem_sample]
    lines = _physical_lines(con, path, [rec for rec, _ in sample], fmt.duckdb_options())
    load.problems = [ExportProblem(name, lines.get(rec, rec + 1), why) for rec, why in sample]
    return load


def _read_groups(
    con: duckdb.DuckDBPyConnection,
    load: FileLoad,
    first_day: date | None,
    last_day: date | None,
    target_table: str,
) -> None:
    ranged = "true"
    if first_day is not None:
        ranged += f" AND CAST(bstart AS DATE) >= DATE '{first_day.isoformat()}'"
    if last_day is not None:
        ranged += f" AND CAST(bstart AS DATE) <= DATE '{last_day.isoformat()}'"
    has_ids = HAS_IDS_SQL
    sums = ", ".join(f"sum({_q(m)})" for m in METRICS)
    con.execute(
        f"INSERT INTO {target_table} SELECT CAST(bstart AS DATE), project_id, api_key_id, user_id, "
        f"model, service_tier, batch, true, sum(n), {sums} FROM export_groups "
        f"WHERE problem IS NULL AND {has_ids} AND {ranged} GROUP BY ALL"
    )
    (total,) = con.execute("SELECT coalesce(sum(n), 0) FROM export_groups").fetchone() or (0,)
    load.rows = int(total)
    outside, empties, no_ids, *no_id_sums = con.execute(
        f"SELECT coalesce(sum(n) FILTER (WHERE NOT ({ranged})), 0), "
        f"coalesce(sum(empties) FILTER (WHERE {ranged} AND NOT {has_ids}), 0), "
        f"coalesce(sum(n - empties) FILTER (WHERE {ranged} AND NOT {has_ids}), 0), "
        + ", ".join(
            f"coalesce(sum({_q(m)}) FILTER (WHERE {ranged} AND NOT {has_ids}), 0)" for m in METRICS
        )
        + " FROM export_groups WHERE problem IS NULL"
    ).fetchone() or (0, 0, 0)
    load.rows_outside_range = int(outside)
    load.empty_bucket_rows = int(empties)
    load.rows_without_ids = int(no_ids)
    load.without_ids_totals = [int(v) for v in no_id_sums]
    for bstart, bend in con.execute(
        "SELECT DISTINCT bstart, bend FROM export_groups WHERE problem IS NULL"
    ).fetchall():
        load.buckets.add((bstart.replace(tzinfo=UTC), bend.replace(tzinfo=UTC)))


def _physical_lines(
    con: duckdb.DuckDBPyConnection, path: Path, recs: Sequence[int], options: str = ""
) -> dict[int, int]:
    """Record number -> line number: blank lines are not records, so they shift the count.

    Only run when there are problems to report. (A quoted field spanning lines would shift
    it too; the dashboard never writes those.)
    """
    if not recs:
        return {}
    wanted = ", ".join(str(int(r)) for r in recs)
    reader = (
        f"read_csv({_lit(str(path))}, columns={{'l': 'VARCHAR'}}, header=false, auto_detect=false, "
        f"delim='\x1e', quote='', escape='', null_padding=true, strict_mode=false{options})"
    )
    result = con.execute(
        f"SELECT rec, line FROM (SELECT ordinality AS line, "
        f"row_number() OVER (ORDER BY ordinality) - 1 AS rec FROM {reader} WITH ORDINALITY "
        f"WHERE l IS NOT NULL AND trim(l) <> '') WHERE rec IN ({wanted})"
    ).fetchall()
    return {int(rec): int(line) for rec, line in result}


# -- DuckDB fast path: typed parse, validate per bucket, no per-row text -------------------------


def totals_table_ddl(table: str) -> str:
    """A table in TOTALS_COLUMNS layout (what both sides' key-day rows are compared in)."""
    types = {"day": "DATE", "batch": "BOOLEAN", "aligned": "BOOLEAN"}
    cols = ", ".join(
        f"{_q(c)} {types.get(c, 'VARCHAR' if c in KEY_TEXT_COLUMNS else 'BIGINT')}"
        for c in TOTALS_COLUMNS
    )
    return f"CREATE TEMP TABLE {table} ({cols})"


@dataclass
class StagedExport:
    """One CSV/TSV export read into DuckDB: its counts, and its key-day rows as a SELECT.

    ``relation`` yields TOTALS_COLUMNS rows for the rows with ids inside the range (None
    when the file has none to offer, e.g. a header without the key columns); ``unique``
    says it has one row per key-day already. ``tables`` back the relation.
    """

    load: FileLoad
    relation: str | None
    unique: bool
    tables: list[str] = field(default_factory=list)
    fast: bool = True

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        for table in self.tables:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        self.tables.clear()


def _cell(name: str) -> str:
    """A cell of the typed reader: empty cells are NULL there."""
    return f"coalesce({_q(name)}, '')"


def fast_rows_sql(path: Path, fmt: ExportFormat) -> str:
    """Every row typed by DuckDB's reader: metrics as DOUBLE, the rest as text.

    A cell the reader cannot type, or a row of the wrong length, makes the query fail
    (strict mode); the caller then falls back to ``load_delimited_exact``. Per row:
    bstart/bend (as ``delimited_rows_sql`` computes them), the trimmed key text, batch,
    ``ok`` (the batch cell is TRUE/FALSE/1/0/empty and every count whole, non-negative
    and at most FAST_MAX_COUNT) and the counts as UINTEGER. Kept narrow on purpose: the
    rows of a 1M-row export are held in memory until the comparison is done.
    """
    types = {c: ("DOUBLE" if c in fmt.metrics else "VARCHAR") for c in fmt.columns}
    columns = ", ".join(f"{_lit(c)}: {_lit(t)}" for c, t in types.items())
    reader = (
        f"read_csv({_lit(str(path))}, columns={{{columns}}}, header=true, auto_detect=false, "
        f"delim={_lit(fmt.delimiter)}, quote='\"', escape='\"', strict_mode=true, "
        f"encoding='utf-8'{fmt.duckdb_options()})"
    )
    # with ISO columns the epoch ones are not read: a row whose ISO cell is empty gets no
    # time here and goes to the exact path, which falls back to the epoch as the rules say
    times = [
        c
        for c in fmt.columns
        if not (c in ("start_time", "end_time") and f"{c}_iso" in fmt.columns)
    ]
    start, _ = _sql_time(times, "start_time", _cell)
    end, _ = _sql_time(times, "end_time", _cell)
    text = ", ".join(
        (f"trim({_cell(c)})" if c in fmt.columns else "''") + f" AS {_q(c)}"
        for c in KEY_TEXT_COLUMNS
    )
    batch = f"lower(trim({_cell('batch')}))" if "batch" in fmt.columns else "''"
    ok = " AND ".join(
        [
            "batch_cell IN ('true', 'false', '1', '0', '')",
            *(
                f"({_q(m)} IS NULL OR ({_q(m)} >= 0 AND {_q(m)} = floor({_q(m)}) "
                f"AND {_q(m)} <= {FAST_MAX_COUNT}))"
                for m in fmt.metrics
            ),
        ]
    )
    counts = ", ".join(
        (f"TRY_CAST(coalesce({_q(m)}, 0) AS UINTEGER)" if m in fmt.metrics else "0::UINTEGER")
        + f" AS {_q(m)}"
        for m in METRICS
    )
    return (
        f"SELECT bstart, bend, {', '.join(_q(c) for c in KEY_TEXT_COLUMNS)}, "
        f"batch_cell IN ('true', '1') AS batch, {ok} AS ok, {counts} FROM (SELECT *, "
        f"{start} AS bstart, {end} AS bend, {batch} AS batch_cell FROM (SELECT {text}, "
        f"{', '.join(_q(c) for c in fmt.columns if c not in KEY_TEXT_COLUMNS)} FROM {reader}))"
    )


# The fast path stores counts as UINTEGER; a larger count (never seen per bucket and key)
# is not an error: that file is read by the exact path instead.
FAST_MAX_COUNT = 2**32 - 1


def duckdb_engine() -> Any:
    """DuckDB's engine: the C++ extension ``_duckdb``, which the ``duckdb`` package re-exports.

    Imported alone it takes ~0.01 s; the package's Python layer (relation API, version
    lookup through importlib.metadata) adds ~0.08 s, which the diff command pays before it
    can start reading. Only ``connect`` and ``Error`` are needed here (the same objects
    either way); without the extension module the package is used.
    """
    engine: Any
    try:
        engine = importlib.import_module("_duckdb")
    except ImportError:
        engine = None
    if not (hasattr(engine, "connect") and hasattr(engine, "Error")):
        engine = importlib.import_module("duckdb")
    return engine


def stage_delimited_duckdb(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    name: str,
    first_day: date | None = None,
    last_day: date | None = None,
    fmt: ExportFormat | None = None,
    problem_sample: int = PROBLEM_SAMPLE,
) -> StagedExport:
    """Read one CSV/TSV export into DuckDB, the fast way when the file is clean.

    The fast path lets DuckDB's reader type every cell (no per-cell text checks) into a
    table ``name`` of rows, then checks what is left per bucket: bucket times
    (``bucket_problem``, in Python, once per bucket), batch cells and whole counts (one
    flag per row). When every row passes and no key-day repeats, the rows themselves are
    the key-day totals: nothing is grouped by the wide key at all. Anything else (a row
    the reader rejects, a bad bucket, batch or count) falls back to
    ``load_delimited_exact``, which finds and reports every bad row with its line; so the
    fast path never decides what a bad row is, it only proves there is none.
    """
    fmt = fmt or sniff_export(path)
    if fmt.missing or fmt.unreadable:
        return _stage_exact(con, path, name, first_day, last_day, fmt, problem_sample)
    con.execute(f"DROP TABLE IF EXISTS {name}")
    try:
        con.execute(f"CREATE TEMP TABLE {name} AS {fast_rows_sql(path, fmt)}")
    except duckdb_engine().Error:  # the reader rejected a cell or a row: the exact path says which
        con.execute(f"DROP TABLE IF EXISTS {name}")
        return _stage_exact(con, path, name, first_day, last_day, fmt, problem_sample)
    staged = StagedExport(FileLoad(), None, False, [name])
    if not _check_fast(con, staged, name, first_day, last_day):
        staged.drop(con)
        return _stage_exact(con, path, name, first_day, last_day, fmt, problem_sample)
    return staged


def _check_fast(
    con: duckdb.DuckDBPyConnection,
    staged: StagedExport,
    table: str,
    first_day: date | None,
    last_day: date | None,
) -> bool:
    """Fill ``staged`` from the typed rows; False when the exact path must decide."""
    load = staged.load
    no_usage = " AND ".join(f"{_q(m)} = 0" for m in METRICS)
    is_empty = f"(NOT {HAS_IDS_SQL} AND model = '' AND {no_usage})"
    keys = "project_id, api_key_id, user_id, model, service_tier, batch"
    buckets = con.execute(
        f"SELECT bstart, bend, count(*), count(*) FILTER (WHERE NOT ok), "
        f"count(*) FILTER (WHERE {is_empty}), "
        f"count(*) FILTER (WHERE NOT {HAS_IDS_SQL} AND NOT {is_empty}), "
        f"count(*) FILTER (WHERE {HAS_IDS_SQL}), "
        f"count(DISTINCT hash({keys})) FILTER (WHERE {HAS_IDS_SQL}), "
        + ", ".join(f"coalesce(sum({_q(m)}) FILTER (WHERE NOT {HAS_IDS_SQL}), 0)" for m in METRICS)
        + f" FROM {table} GROUP BY ALL"
    ).fetchall()
    in_range = False
    # no key repeats inside a bucket, and no day with two buckets: each row is a key-day
    # (a hash collision can only lower the distinct count: then the rows are grouped)
    days_seen: set[date] = set()
    unique = True
    for bstart, bend, n, bad, empties, no_ids, with_ids, distinct, *no_id_sums in buckets:
        if bad or bstart is None or bend is None:
            return False
        start, end = bstart.replace(tzinfo=UTC), bend.replace(tzinfo=UTC)
        if bucket_problem(start, end) is not None:
            return False
        load.rows += int(n)
        load.buckets.add((start, end))
        day = start.date()
        if (first_day and day < first_day) or (last_day and day > last_day):
            load.rows_outside_range += int(n)
            continue
        in_range = True
        unique = unique and with_ids == distinct and day not in days_seen
        days_seen.add(day)
        load.empty_bucket_rows += int(empties)
        load.rows_without_ids += int(no_ids)
        load.without_ids_totals = [
            a + int(b) for a, b in zip(load.without_ids_totals, no_id_sums, strict=True)
        ]
    if not in_range:
        return True
    ranged = "true"
    if first_day is not None:
        ranged += f" AND bstart >= TIMESTAMP '{first_day.isoformat()}'"
    if last_day is not None:
        ranged += f" AND bstart < TIMESTAMP '{(last_day + timedelta(days=1)).isoformat()}'"
    if not unique:  # several buckets a day (or a repeat): are the key-days still unique?
        day_keys = f"CAST(bstart AS DATE), {keys}"
        rows, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT hash({day_keys})) FROM {table} "
            f"WHERE {HAS_IDS_SQL} AND {ranged}"
        ).fetchone() or (0, 0)
        unique = rows == distinct
    metrics = ", ".join(f"CAST({_q(m)} AS BIGINT) AS {_q(m)}" for m in METRICS)
    relation = (
        f"SELECT CAST(bstart AS DATE) AS day, project_id, api_key_id, user_id, model, "
        f"service_tier, batch, true AS aligned, 1::BIGINT AS record_count, "
        f"{metrics} FROM {table} WHERE {HAS_IDS_SQL} AND {ranged}"
    )
    staged.unique = unique
    if unique:
        staged.relation = relation
        return True
    grouped = f"{table}_days"
    sums = ", ".join(f"sum({_q(m)})::BIGINT AS {_q(m)}" for m in METRICS)
    con.execute(
        f"CREATE TEMP TABLE {grouped} AS SELECT day, project_id, api_key_id, user_id, model, "
        f"service_tier, batch, aligned, sum(record_count)::BIGINT AS record_count, {sums} "
        f"FROM ({relation}) GROUP BY ALL"
    )
    con.execute(f"DROP TABLE {table}")
    staged.tables = [grouped]
    staged.relation = f"SELECT * FROM {grouped}"
    staged.unique = True
    return True


def _stage_exact(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    name: str,
    first_day: date | None,
    last_day: date | None,
    fmt: ExportFormat,
    problem_sample: int,
) -> StagedExport:
    table = f"{name}_exact"
    con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute(totals_table_ddl(table))
    load = load_delimited_exact(con, path, table, first_day, last_day, fmt, problem_sample)
    return StagedExport(load, f"SELECT * FROM {table}", True, [table], fast=False)
