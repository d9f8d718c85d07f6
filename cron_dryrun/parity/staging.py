"""Staging one CSV/TSV export in DuckDB: one typed pass, then its key-days for a range.

``stage_file`` reads a file once, with DuckDB's reader typing every cell (metrics as
DOUBLE, the rest as text) into a table of narrow rows; the per-bucket checks (bucket
times, batch cells, whole counts) run over that table, not the file. A clean file is
done after that one pass. A file the typed reader rejects, or with a bad bucket, batch
or count, is read again by the exact reader (``delimited_rows_sql``), which names every
bad row with its line: only a file with bad rows pays for naming them. A cut download is
named as such: a ``.csv`` whose last row stops mid-row (``ends mid-row at line N``) or a
``.csv.gz`` whose stream stops early.

What is staged does not depend on the range compared: ``take`` turns it into the
range's counts and key-day rows. So the preflight can stage the export before anything is
sent, and parity uses that table instead of reading the file again (export_side).
Nothing here talks to a database server; DuckDB is an in-process engine over files.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from cron_dryrun.parity.duck import duckdb_engine
from cron_dryrun.parity.export_sql import (
    delimited_rows_sql,
    fast_rows_sql,
    quote_name,
    quote_text,
    totals_table_ddl,
)
from cron_dryrun.parity.formats import (
    CUT_SHORT,
    GZIP_ENDS_EARLY,
    HAS_IDS_SQL,
    KEY_TEXT_COLUMNS,
    METRICS,
    PROBLEM_SAMPLE,
    ExportFormat,
    ExportProblem,
    bucket_problem,
    key_hash_sql,
    sniff_export,
    sql_path,
)
from cron_dryrun.parity.readers import read_json_pages

if TYPE_CHECKING:
    import duckdb

KEYS_SQL = "project_id, api_key_id, user_id, model, service_tier, batch"


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


@dataclass(frozen=True)
class BucketStats:
    """One bucket of a clean file: its rows, empty-bucket rows, rows without ids (and
    their usage, aligned to METRICS)."""

    start: datetime
    end: datetime
    rows: int
    empties: int
    no_ids: int
    no_id_sums: tuple[int, ...]


@dataclass
class StagedFile:
    """One CSV/TSV export read once into DuckDB, whatever range is compared later.

    ``table``: the typed rows of a clean file (``fast``), or the exact reader's groups
    per bucket and key (a bad row its own group); None when no row could be read (a
    file-level problem). ``damage``: why the file is not what was downloaded (it ends
    mid-row, its gzip stream ends early), or None.
    """

    path: Path
    fmt: ExportFormat
    table: str | None
    fast: bool
    buckets: list[BucketStats] = field(default_factory=list)
    problems: list[ExportProblem] = field(default_factory=list)
    problem_count: int = 0
    damage: str | None = None

    def drop(self, con: duckdb.DuckDBPyConnection) -> None:
        if self.table is not None:
            con.execute(f"DROP TABLE IF EXISTS {self.table}")


def stage_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    name: str,
    fmt: ExportFormat | None = None,
    problem_sample: int = PROBLEM_SAMPLE,
) -> StagedFile:
    """Read one CSV/TSV export into table ``name``: one typed pass when the file is clean.

    The typed reader (``fast_rows_sql``, strict) fails on a row of the wrong length or a
    cell it cannot type; the per-bucket checks (``clean_buckets``) find the rest. Either
    way the exact reader then decides, and names, every bad row; the fast path never
    decides what a bad row is, it only proves there is none.
    """
    fmt = fmt or sniff_export(path)
    problem = fmt.problem(str(path))
    if problem is not None:
        return StagedFile(path, fmt, None, False, [], [problem], 1)
    if fmt.kind == "json":
        return stage_json(con, path, name, fmt, problem_sample)
    con.execute(f"DROP TABLE IF EXISTS {name}")
    try:
        con.execute(f"CREATE TEMP TABLE {name} AS {fast_rows_sql(path, fmt)}")
    except duckdb_engine().Error as exc:  # the reader rejected a cell or a row, or the stream
        con.execute(f"DROP TABLE IF EXISTS {name}")
        if gzip_ended_early(exc):
            return damaged_gzip(path, fmt)
        return stage_exact(con, path, f"{name}_groups", fmt, problem_sample)
    buckets = clean_buckets(con, name)
    if buckets is None:
        con.execute(f"DROP TABLE {name}")
        return stage_exact(con, path, f"{name}_groups", fmt, problem_sample)
    return StagedFile(path, fmt, name, True, buckets)


def gzip_ended_early(exc: BaseException) -> bool:
    """DuckDB's error for a gzip stream without its end (a download cut short)."""
    return "end of gzip stream" in str(exc).lower()


def damaged_gzip(path: Path, fmt: ExportFormat) -> StagedFile:
    reason = f"{GZIP_ENDS_EARLY}: {CUT_SHORT}"
    problem = ExportProblem(str(path), 0, reason, "file")
    return StagedFile(path, fmt, None, False, [], [problem], 1, GZIP_ENDS_EARLY)


def clean_buckets(con: duckdb.DuckDBPyConnection, table: str) -> list[BucketStats] | None:
    """Per bucket of the typed rows: its counts; None when a row or a bucket is not clean
    (a bad batch cell or count, a time the reader could not place, a bucket crossing
    midnight): then the exact reader decides."""
    no_usage = " AND ".join(f"{quote_name(m)} = 0" for m in METRICS)
    is_empty = f"(NOT {HAS_IDS_SQL} AND model = '' AND {no_usage})"
    rows = con.execute(
        f"SELECT bstart, bend, count(*), count(*) FILTER (WHERE NOT ok), "
        f"count(*) FILTER (WHERE {is_empty}), "
        f"count(*) FILTER (WHERE NOT {HAS_IDS_SQL} AND NOT {is_empty}), "
        + ", ".join(
            f"coalesce(sum({quote_name(m)}) FILTER (WHERE NOT {HAS_IDS_SQL}), 0)" for m in METRICS
        )
        + f" FROM {table} GROUP BY ALL"
    ).fetchall()
    buckets = []
    for bstart, bend, n, bad, empties, no_ids, *no_id_sums in rows:
        if bad or bstart is None or bend is None:
            return None
        start, end = bstart.replace(tzinfo=UTC), bend.replace(tzinfo=UTC)
        if bucket_problem(start, end) is not None:
            return None
        sums = tuple(int(v) for v in no_id_sums)
        buckets.append(BucketStats(start, end, int(n), int(empties), int(no_ids), sums))
    return buckets


def stage_exact(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    table: str,
    fmt: ExportFormat,
    problem_sample: int = PROBLEM_SAMPLE,
) -> StagedFile:
    """The exact reader: every cell read as text, every rule checked row by row in SQL.

    Same rules as ``read_delimited`` + ``DailyRollup``. The file is parsed once, into
    per-bucket groups (a bad row is its own group); ``take`` reads a range's days,
    buckets and counts from those groups, which are never more than the rows. Bad rows
    are named here, with their lines (a sample of ``problem_sample``; all are counted).
    """
    name = str(path)
    sums = ", ".join(f"CAST(sum({quote_name(m)}) AS BIGINT) AS {quote_name(m)}" for m in METRICS)
    con.execute(f"DROP TABLE IF EXISTS {table}")
    try:
        con.execute(
            f"CREATE TEMP TABLE {table} AS SELECT problem, "
            f"CASE WHEN problem IS NOT NULL THEN rec END AS bad_rec, bstart, bend, project_id, "
            f"api_key_id, user_id, model, service_tier, batch, count(*) AS n, "
            f"count(*) FILTER (WHERE is_empty) AS empties, {sums} "
            f"FROM ({delimited_rows_sql(path, fmt)}) GROUP BY ALL"
        )
    except duckdb_engine().Error as exc:
        con.execute(f"DROP TABLE IF EXISTS {table}")
        if gzip_ended_early(exc):
            return damaged_gzip(path, fmt)
        if "out of memory" in str(exc).lower():  # not the file's fault: said as DuckDB says it
            raise
        raise OSError(f"export file {path}: cannot be read ({exc})") from None
    bad = con.execute(
        f"SELECT bad_rec, problem FROM {table} WHERE problem IS NOT NULL ORDER BY bad_rec"
    ).fetchall()
    (records,) = con.execute(f"SELECT coalesce(sum(n), 0) FROM {table}").fetchone() or (0,)
    sample = bad[:problem_sample]
    last = int(records)  # records count from 1 (the header is record 0)
    # a download cut mid-row: the last record is short and the file has no final newline
    cut = bool(bad) and bad[-1][0] == last and str(bad[-1][1]).startswith("expected ")
    cut = cut and not ends_with_newline(path, fmt)
    recs = [rec for rec, _ in sample] + ([last] if cut else [])
    lines = _physical_lines(con, path, recs, fmt.duckdb_options())
    problems = [ExportProblem(name, lines.get(rec, rec + 1), why) for rec, why in sample]
    damage = f"ends mid-row at line {lines.get(last, last + 1)}" if cut else None
    return StagedFile(path, fmt, table, False, [], problems, len(bad), damage)


# stage_json's rows, as its CSV file holds them: a problem (empty for a bucket result), the
# bucket, the key, whether it is an empty bucket, the counts
_JSON_ROW_TYPES = {
    "problem": "VARCHAR",
    "bstart": "TIMESTAMP",
    "bend": "TIMESTAMP",
    **dict.fromkeys(("project_id", "api_key_id", "user_id", "model", "service_tier"), "VARCHAR"),
    "batch": "BOOLEAN",
    "is_empty": "BOOLEAN",
    **dict.fromkeys(METRICS, "BIGINT"),
}


def _naive_utc(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def stage_json(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    table: str,
    fmt: ExportFormat,
    problem_sample: int = PROBLEM_SAMPLE,
) -> StagedFile:
    """Admin-API JSON pages, read once by the reference reader (``read_json_pages``) into
    table ``table`` in the exact reader's layout: per bucket and key, its results and
    counts; a problem its own row. ``take`` then reads a range from it as from a CSV the
    exact reader staged. A JSON text that stops inside a value, or a gzip stream without
    its end, is the file's damage (a download cut short)."""
    problems: list[ExportProblem] = []
    count = 0
    damage = None
    with tempfile.TemporaryDirectory(prefix="cron-dryrun-json-") as tmp:
        rows = Path(tmp) / "rows.csv"
        with open(rows, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            for item in read_json_pages(path):
                if isinstance(item, ExportProblem):
                    count += 1
                    if len(problems) < problem_sample:
                        problems.append(item)
                    if item.kind == "file" and item.reason.endswith(f": {CUT_SHORT}"):
                        damage = item.reason[: -len(CUT_SHORT) - 2]
                    writer.writerow([item.reason, *[""] * (len(_JSON_ROW_TYPES) - 1)])
                    continue
                writer.writerow(
                    [
                        "", _naive_utc(item.start),
                        _naive_utc(item.end), item.project_id,
                        item.api_key_id, item.user_id, item.model, item.service_tier,
                        item.batch, item.is_empty, *(item.metrics.get(m, 0) for m in METRICS),
                    ]
                )  # fmt: skip
        columns = ", ".join(f"'{c}': '{t}'" for c, t in _JSON_ROW_TYPES.items())
        text = ", ".join(f"coalesce({c}, '') AS {c}" for c in KEY_TEXT_COLUMNS)
        sums = ", ".join(
            f"CAST(sum({quote_name(m)}) AS BIGINT) AS {quote_name(m)}" for m in METRICS
        )
        con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(
            f"CREATE TEMP TABLE {table} AS SELECT problem, NULL::BIGINT AS bad_rec, bstart, bend, "
            f"{', '.join(KEY_TEXT_COLUMNS)}, batch, count(*) AS n, "
            f"count(*) FILTER (WHERE is_empty) AS empties, {sums} FROM (SELECT "
            f"nullif(problem, '') AS problem, bstart, bend, {text}, batch, is_empty, "
            f"{', '.join(quote_name(m) for m in METRICS)} FROM read_csv('{sql_path(rows)}', "
            f"columns={{{columns}}}, header=false, auto_detect=false, delim=',', quote='\"', "
            f"escape='\"')) GROUP BY ALL"
        )
    return StagedFile(path, fmt, table, False, [], problems, count, damage)


def ends_with_newline(path: Path, fmt: ExportFormat) -> bool:
    """Whether the file's text ends with a line break (a gzip file is not re-read: its cut
    shows as a stream that ends early)."""
    if fmt.compression == "gzip":
        return True
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            return True
        fh.seek(-1, 2)
        return fh.read(1) in (b"\n", b"\r")


def take(
    con: duckdb.DuckDBPyConnection,
    staged: StagedFile,
    first_day: date | None = None,
    last_day: date | None = None,
) -> StagedExport:
    """A staged file's counts and key-day rows for [first_day, last_day] (open ends: all)."""
    if staged.table is None:
        load = FileLoad(problems=list(staged.problems), problem_count=staged.problem_count)
        return StagedExport(load, None, True, [], fast=False)
    if not staged.fast:
        return _take_exact(con, staged, first_day, last_day)
    load = FileLoad()
    in_range = False
    for b in staged.buckets:
        load.rows += b.rows
        load.buckets.add((b.start, b.end))
        day = b.start.date()
        if (first_day and day < first_day) or (last_day and day > last_day):
            load.rows_outside_range += b.rows
            continue
        in_range = True
        load.empty_bucket_rows += b.empties
        load.rows_without_ids += b.no_ids
        load.without_ids_totals = [
            a + v for a, v in zip(load.without_ids_totals, b.no_id_sums, strict=True)
        ]
    if not in_range:
        return StagedExport(load, None, True, [])
    relation, tables = key_days_relation(con, staged.table, first_day, last_day)
    return StagedExport(load, relation, True, tables)


def key_days_relation(
    con: duckdb.DuckDBPyConnection, table: str, first_day: date | None, last_day: date | None
) -> tuple[str, list[str]]:
    """TOTALS_COLUMNS rows and the key hash ``kh``, one per key-day, from the typed rows in
    range (and the tables made for it). Rows are key-days already, except where a key
    repeats in a day (hourly buckets, or a key twice in one bucket): only those are grouped.
    A hash shared by two different keys only sends them to the grouping, which groups by
    the keys themselves."""
    ranged = "true"
    if first_day is not None:
        ranged += f" AND bstart >= TIMESTAMP '{first_day.isoformat()}'"
    if last_day is not None:
        ranged += f" AND bstart < TIMESTAMP '{(last_day + timedelta(days=1)).isoformat()}'"
    metrics = ", ".join(f"CAST({quote_name(m)} AS BIGINT) AS {quote_name(m)}" for m in METRICS)
    rows = (
        f"SELECT CAST(bstart AS DATE) AS day, {KEYS_SQL}, true AS aligned, "
        f"1::BIGINT AS record_count, {metrics}, kh FROM {table} WHERE {HAS_IDS_SQL} AND {ranged}"
    )
    repeated = f"{table}_repeated"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {repeated} AS SELECT day, kh AS h "
        f"FROM ({rows}) GROUP BY ALL HAVING count(*) > 1"
    )
    (n,) = con.execute(f"SELECT count(*) FROM {repeated}").fetchone() or (0,)
    if not n:
        con.execute(f"DROP TABLE {repeated}")
        return rows, []
    grouped = f"{table}_days"
    sums = ", ".join(f"sum({quote_name(m)})::BIGINT AS {quote_name(m)}" for m in METRICS)
    on = "r.day = x.day AND r.h = x.kh"
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {grouped} AS SELECT x.day, {KEYS_SQL}, true AS aligned, "
        f"sum(record_count)::BIGINT AS record_count, {sums}, kh FROM ({rows}) x "
        f"SEMI JOIN {repeated} r ON {on} GROUP BY ALL"
    )
    single = f"SELECT x.* FROM ({rows}) x ANTI JOIN {repeated} r ON {on}"
    return f"{single} UNION ALL SELECT * FROM {grouped}", [repeated, grouped]


def _take_exact(
    con: duckdb.DuckDBPyConnection,
    staged: StagedFile,
    first_day: date | None,
    last_day: date | None,
) -> StagedExport:
    load = FileLoad(problems=list(staged.problems), problem_count=staged.problem_count)
    table = f"{staged.table}_exact"
    con.execute(f"DROP TABLE IF EXISTS {table}")
    con.execute(totals_table_ddl(table))
    _read_groups(con, str(staged.table), load, first_day, last_day, table)
    relation = f"SELECT *, {key_hash_sql()} AS kh FROM {table}"
    return StagedExport(load, relation, True, [table], fast=False)


def _read_groups(
    con: duckdb.DuckDBPyConnection,
    groups: str,
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
    sums = ", ".join(f"sum({quote_name(m)})" for m in METRICS)
    con.execute(
        f"INSERT INTO {target_table} SELECT CAST(bstart AS DATE), project_id, api_key_id, user_id, "
        f"model, service_tier, batch, true, sum(n), {sums} FROM {groups} "
        f"WHERE problem IS NULL AND {has_ids} AND {ranged} GROUP BY ALL"
    )
    (total,) = con.execute(f"SELECT coalesce(sum(n), 0) FROM {groups}").fetchone() or (0,)
    load.rows = int(total)
    outside, empties, no_ids, *no_id_sums = con.execute(
        f"SELECT coalesce(sum(n) FILTER (WHERE NOT ({ranged})), 0), "
        f"coalesce(sum(empties) FILTER (WHERE {ranged} AND NOT {has_ids}), 0), "
        f"coalesce(sum(n - empties) FILTER (WHERE {ranged} AND NOT {has_ids}), 0), "
        + ", ".join(
            f"coalesce(sum({quote_name(m)}) FILTER (WHERE {ranged} AND NOT {has_ids}), 0)"
            for m in METRICS
        )
        + f" FROM {groups} WHERE problem IS NULL"
    ).fetchone() or (0, 0, 0)
    load.rows_outside_range = int(outside)
    load.empty_bucket_rows = int(empties)
    load.rows_without_ids = int(no_ids)
    load.without_ids_totals = [int(v) for v in no_id_sums]
    for bstart, bend in con.execute(
        f"SELECT DISTINCT bstart, bend FROM {groups} WHERE problem IS NULL"
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
        f"read_csv({quote_text(str(path))}, columns={{'l': 'VARCHAR'}}, header=false, auto_detect=false, "
        f"delim='\x1e', quote='', escape='', null_padding=true, strict_mode=false{options})"
    )
    result = con.execute(
        f"SELECT rec, line FROM (SELECT ordinality AS line, "
        f"row_number() OVER (ORDER BY ordinality) - 1 AS rec FROM {reader} WITH ORDINALITY "
        f"WHERE l IS NOT NULL AND trim(l) <> '') WHERE rec IN ({wanted})"
    ).fetchall()
    return {int(rec): int(line) for rec, line in result}


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


def stage_delimited_duckdb(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    name: str,
    first_day: date | None = None,
    last_day: date | None = None,
    fmt: ExportFormat | None = None,
    problem_sample: int = PROBLEM_SAMPLE,
) -> StagedExport:
    """Stage one CSV/TSV export and take [first_day, last_day] of it (``stage_file``, ``take``)."""
    staged = stage_file(con, path, name, fmt, problem_sample)
    return take(con, staged, first_day, last_day)
