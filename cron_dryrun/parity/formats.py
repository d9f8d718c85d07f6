"""What an OpenAI usage export is: its columns, keys and cells (contract.md section 5).

The metrics and key columns both sides are compared in, ``DayKey`` and ``ExportProblem``,
the sniffing of a file's format from its header (gzip read through), and the reference
rules for one cell or row (counts, times, buckets): the readers (readers, export_sql)
all follow these. Never changes a total silently: a bad row is reported with file and line.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    pass


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


# A key-day's five key cells as one text, joined by the ASCII unit separator: how the
# database side sends its keys over ADBC (one field where there were five: PostgreSQL's
# binary COPY and the driver's parse cost per field, benchmarks/README.md), and what the
# twin hashes of both sides are taken over. The join is exact while no cell holds the
# separator; where one does, neither side is compared through it (usage_arrow, compare).
KEY_SEPARATOR = "\x1f"
KEY_SEPARATOR_SQL = f"chr({ord(KEY_SEPARATOR)})"  # the same in DuckDB and PostgreSQL


def joined_key_sql(cells: Sequence[str] | None = None) -> str:
    """DuckDB or PostgreSQL: the key cells (SQL expressions, never NULL; by default the
    KEY_TEXT_COLUMNS) joined into one text."""
    cells = cells or [f'"{c}"' for c in KEY_TEXT_COLUMNS]
    return f"concat_ws({KEY_SEPARATOR_SQL}, {', '.join(cells)})"


def key_has_ids_sql(column: str = "k") -> str:
    """DuckDB: whether a joined key has any of the three ids (its first three cells): all
    empty, it starts with three separators. Exact for a key ``unsplittable_key_sql`` passes."""
    return f"NOT starts_with({column}, {' || '.join([KEY_SEPARATOR_SQL] * 3)})"


def key_hash_sql(key: str | None = None, batch: str = "batch") -> str:
    """DuckDB: a key-day's key as one 64-bit hash, taken over the joined key (``key``, else
    the cells joined) and batch: equal on both sides for equal cells, so twins are hashed
    and repeats found over integers instead of five texts."""
    return f"hash({key or joined_key_sql()}, {batch})"


def twin_hash_sql(metrics: Sequence[str]) -> str:
    """DuckDB: a key-day's twin hash over its day, key hash ``kh`` and compared metrics (NULL
    as 0, as the join reads it): equal on both sides for a key-day that agrees exactly."""
    values = "".join(f', coalesce("{m}", 0)::BIGINT' for m in metrics)
    return f'hash("day"::DATE, kh{values})'


def split_key_sql(column: str = "k") -> str:
    """DuckDB: a joined key (``joined_key_sql``) back into its five named cells."""
    return ", ".join(
        f'split_part({column}, {KEY_SEPARATOR_SQL}, {i}) AS "{c}"'
        for i, c in enumerate(KEY_TEXT_COLUMNS, 1)
    )


def unsplittable_key_sql(column: str = "k") -> str:
    """DuckDB: a joined key holding more than its 4 separators (a cell held one), which
    ``split_key_sql`` cannot take apart. LIKE, not a count: no string is built per row."""
    return f"{column} LIKE '%" + "%".join([KEY_SEPARATOR] * 5) + "%'"


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
# a download cut short, as the preflight and parity say it (the file's damage, then this)
GZIP_ENDS_EARLY = "gzip stream ends early"
JSON_ENDS_EARLY = "ends mid-JSON"
CUT_SHORT = "the download was cut short; download the export again"


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


def stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def bucket_problem(start: datetime, end: datetime) -> str | None:
    """Buckets must lie inside one UTC day, so they roll up into exactly one day."""
    if end <= start:
        return f"bucket ends before it starts: {stamp(start)} .. {stamp(end)}"
    if (end - timedelta(microseconds=1)).date() != start.date():
        return f"bucket crosses midnight UTC: {stamp(start)} .. {stamp(end)}"
    return None


def _time_cell(cells: dict[str, str], name: str) -> tuple[str | None, str | None]:
    return cells.get(f"{name}_iso"), cells.get(name)


def time_label(cells: dict[str, str], name: str) -> str:
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
            return ExportProblem(file, line, f"unparseable time in {time_label(cells, name)}")
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


def sql_path(path: Path) -> str:
    """A path as a DuckDB string literal's body (every module quotes paths alike)."""
    return str(path).replace("'", "''")
