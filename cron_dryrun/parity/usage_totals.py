"""The database side of the parity diff: one grouped, read-only query over usage_events.

PostgreSQL adds up the rows (daily totals per key); we never pull rows. The grouped result
leaves the server as ``COPY (query) TO STDOUT (FORMAT csv)`` and is written straight to a
file in ``formats.TOTALS_COLUMNS`` layout, which the reconciler reads with DuckDB: 1M groups
never become 1M Python objects (the loop below only moves libpq's buffers into 1 MB blocks).

At scale the day range is split over two connections that share one snapshot
(``pg_export_snapshot``), so the grouping and the CSV formatting run on two server
processes and the result is exactly what one query would have returned.
"""

from __future__ import annotations

import csv
import select
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path

import psycopg
from psycopg import errors, pq, sql

from cron_dryrun.parity.db_side import DbTotalsFiles
from cron_dryrun.parity.formats import METRIC_COLUMNS
from cron_dryrun.target.database import read_only

BLOCK_BYTES = 1 << 20
WORK_MEM = "256MB"
_ALIGNED = (
    "(window_end IS NOT NULL AND window_end > window_start "
    "AND window_end <= window_start::date + 1)::int"
)
_HAS_IDS = (
    "(coalesce(project_id, '') <> '' OR coalesce(openai_api_key_id, '') <> '' "
    "OR coalesce(openai_user_id, '') <> '')::int"
)
# a stats row of the GROUPING SETS query: 'YYYY-MM-DD' then a NULL (empty, unquoted)
# project id; a key row's project id is quoted when empty
_STATS_AT, _COMMA = 11, ord(",")


def daily_totals_query(
    first_day: date, last_day: date, *, zero_as_null: bool = False, with_stats: bool = False
) -> sql.Composed:
    """Daily totals per key for windows starting in [first_day, last_day] (UTC, inclusive).

    ``window_start``/``window_end`` are ``timestamp without time zone`` holding UTC. A row
    whose window lies inside one UTC day (it ends by the next midnight,
    ``window_start::date + 1``) rolls up into that day (``aligned``); a window
    crossing midnight (the flag-off shape) is grouped apart, counted, and not compared.
    NULL ids and tier become '' and NULL batch false, as the app's unique index does.
    ``zero_as_null``: a zero sum is sent as NULL (an empty CSV cell costs the server no
    formatting; the reader turns it back into 0).
    ``with_stats``: the same scan also yields ``daily_stats_query``'s groups (GROUPING
    SETS), as rows whose ids are NULL (an empty unquoted cell; a key row's empty id is
    ``""``) and whose ``batch`` cell holds the has-ids flag; ``_copy_to_file`` routes them.
    """
    start = datetime.combine(first_day, time(0))
    end = datetime.combine(last_day + timedelta(days=1), time(0))
    sum_sql = "nullif(sum({}), 0) AS {}" if zero_as_null else "coalesce(sum({}), 0) AS {}"
    metric_sums = sql.SQL(", ").join(
        sql.SQL(sum_sql).format(sql.Identifier(column), sql.Identifier(f"m_{name}"))
        for name, column in METRIC_COLUMNS
    )
    if not with_stats:
        return sql.SQL(
            "SELECT window_start::date AS day, coalesce(project_id, '') AS project_id, "
            "coalesce(openai_api_key_id, '') AS api_key_id, "
            "coalesce(openai_user_id, '') AS user_id, model, "
            "coalesce(service_tier, '') AS service_tier, coalesce(batch, false)::int AS batch, "
            f"{_ALIGNED} AS aligned, count(*) AS record_count, {{metric_sums}} "
            "FROM usage_events WHERE window_start >= {start} AND window_start < {end} "
            "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
        ).format(metric_sums=metric_sums, start=sql.Literal(start), end=sql.Literal(end))
    # a grouping expression absent from a row's grouping set reads as NULL there: the
    # batch cell carries has_ids on the stats rows, batch itself on the key rows
    return sql.SQL(
        "SELECT window_start::date AS day, coalesce(project_id, '') AS project_id, "
        "coalesce(openai_api_key_id, '') AS api_key_id, "
        "coalesce(openai_user_id, '') AS user_id, model, "
        "coalesce(service_tier, '') AS service_tier, "
        f"coalesce(coalesce(batch, false)::int, {_HAS_IDS}) AS batch, "
        f"{_ALIGNED} AS aligned, count(*) AS record_count, {{metric_sums}} "
        "FROM usage_events WHERE window_start >= {start} AND window_start < {end} "
        "GROUP BY GROUPING SETS ((window_start::date, coalesce(project_id, ''), "
        "coalesce(openai_api_key_id, ''), coalesce(openai_user_id, ''), model, "
        f"coalesce(service_tier, ''), coalesce(batch, false)::int, {_ALIGNED}), "
        f"(window_start::date, {_ALIGNED}, {_HAS_IDS}))"
    ).format(metric_sums=metric_sums, start=sql.Literal(start), end=sql.Literal(end))


def daily_stats_query(first_day: date, last_day: date) -> sql.Composed:
    """Per (day, aligned, has ids): rows and metric sums (db_side.DB_STATS_COLUMNS).

    A handful of rows; what the comparison needs besides the key-days themselves (the
    per-day DB totals, rows without ids, unaligned rows), so DuckDB need not read the
    grouped totals twice.
    """
    start = datetime.combine(first_day, time(0))
    end = datetime.combine(last_day + timedelta(days=1), time(0))
    metric_sums = sql.SQL(", ").join(
        sql.SQL("coalesce(sum({}), 0)").format(sql.Identifier(column))
        for _, column in METRIC_COLUMNS
    )
    return sql.SQL(
        "SELECT window_start::date, (window_end IS NOT NULL AND window_end > window_start "
        "AND window_end <= window_start::date + 1)::int, "
        "(coalesce(project_id, '') <> '' OR coalesce(openai_api_key_id, '') <> '' "
        "OR coalesce(openai_user_id, '') <> '')::int, count(*), {metric_sums} "
        "FROM usage_events WHERE window_start >= {start} AND window_start < {end} "
        "GROUP BY 1, 2, 3"
    ).format(metric_sums=metric_sums, start=sql.Literal(start), end=sql.Literal(end))


def _prepare(conn: psycopg.Connection) -> None:
    """Session settings for the grouping, local to the (read-only) transaction."""
    # keep the ~1M-group hash aggregate in memory; a parallel plan only re-aggregates
    # partial groups that do not shrink (one row per key-day) and takes the reader's core
    conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
    conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")


def _copy_to_file(
    conn: psycopg.Connection,
    query: sql.Composed,
    out: Path,
    stats: list[bytes] | None = None,
) -> int:
    """``COPY (query) TO STDOUT (FORMAT csv)`` into ``out``; bytes written.

    ``stats``: the query is ``daily_totals_query(..., with_stats=True)``; its stats rows
    are appended there (as they came) instead of being written to ``out``.

    libpq hands COPY data over one row at a time; psycopg's Copy object costs several
    Python steps per row, so the rows are taken from the libpq connection directly
    (non-blocking, waiting in select() so other threads keep the GIL) and written in
    large blocks.
    """
    pgconn = conn.pgconn
    copy = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query).as_bytes(conn)
    pgconn.send_query(copy)
    # the connection is non-blocking: a query longer than the socket buffer goes out in
    # pieces, as the socket takes them
    while pgconn.flush():
        select.select([pgconn.socket], [pgconn.socket], [])
        pgconn.consume_input()
    written = 0
    result = _next_result(pgconn)
    if result is None or result.status != pq.ExecStatus.COPY_OUT:
        _raise_for(conn, result)
    get, buffer = pgconn.get_copy_data, bytearray()
    at = _STATS_AT if stats is not None else 0  # a key row never has a ',' first
    with open(out, "wb") as fh:
        while True:
            nbytes, data = get(1)
            if nbytes > 0:
                if data[at] == _COMMA:  # a handful of rows
                    stats.append(bytes(data))  # type: ignore[union-attr]
                    continue
                buffer += data
                if len(buffer) >= BLOCK_BYTES:
                    written += fh.write(buffer)
                    buffer.clear()
            elif nbytes == 0:  # nothing buffered yet: wait for the socket without the GIL
                select.select([pgconn.socket], [], [])
                pgconn.consume_input()
            else:  # -1: the COPY is over; -2: an error, reported by the result below
                break
        written += fh.write(buffer)
    while (result := _next_result(pgconn)) is not None:
        if result.status != pq.ExecStatus.COMMAND_OK:
            _raise_for(conn, result)
    return written


def _next_result(pgconn: pq.abc.PGconn) -> pq.abc.PGresult | None:
    while pgconn.is_busy():
        select.select([pgconn.socket], [], [])
        pgconn.consume_input()
    return pgconn.get_result()


def _raise_for(conn: psycopg.Connection, result: pq.abc.PGresult | None) -> None:
    if result is None:
        raise psycopg.OperationalError("COPY returned no result")
    while _next_result(conn.pgconn) is not None:  # leave the connection idle
        pass
    raise errors.error_from_result(result, encoding=conn.info.encoding)


def copy_daily_totals(dsn: str, first_day: date, last_day: date, out: Path) -> int:
    """Write the grouped result to ``out`` as TOTALS_COLUMNS CSV (no header); bytes written.

    One read-only transaction; zero sums are written as empty cells.
    """
    with read_only(dsn) as conn:
        _prepare(conn)
        written = _copy_to_file(
            conn, daily_totals_query(first_day, last_day, zero_as_null=True), out
        )
        conn.rollback()  # read-only transaction: nothing to keep
    return written


def split_days(first_day: date, last_day: date, parts: int) -> list[tuple[date, date]]:
    """[first_day, last_day] as up to ``parts`` consecutive, non-empty day ranges."""
    days = (last_day - first_day).days + 1
    parts = max(1, min(parts, days))
    ranges, start = [], first_day
    for i in range(parts):
        size = days // parts + (1 if i < days % parts else 0)
        end = start + timedelta(days=size - 1)
        ranges.append((start, end))
        start = end + timedelta(days=1)
    return ranges


def copy_daily_totals_parallel(
    dsn: str, first_day: date, last_day: date, out: Path, parts: int = 2
) -> DbTotalsFiles:
    """The grouped result split by days over ``parts`` connections sharing one snapshot.

    Each part is its own CSV file (``out`` for the first, ``out`` with ``.<n>`` before
    the suffix for the others); together they are exactly one query's result. The same
    scans also sum per (day, aligned, has ids) (GROUPING SETS): those rows are written
    next to them as ``daily_stats_query``'s result (DB_STATS_COLUMNS, zero sums as 0).
    """
    ranges = split_days(first_day, last_day, parts)
    files = [out] + [
        out.with_name(f"{out.stem}.{n}{out.suffix}") for n in range(2, len(ranges) + 1)
    ]
    stats = out.with_name(f"{out.stem}.stats{out.suffix}")
    jobs = [
        (daily_totals_query(a, b, zero_as_null=True, with_stats=True), f)
        for (a, b), f in zip(ranges, files, strict=True)
    ]
    stats_rows: list[bytes] = []  # list.append is atomic: shared by the threads
    conns = _connections_sharing_a_snapshot(dsn, len(jobs))
    if conns is None:  # the snapshot cannot be shared: the same result on one connection
        _copy_in_one_snapshot(dsn, jobs, stats_rows)
        _write_stats(stats_rows, stats)
        return DbTotalsFiles(tuple(files), stats)
    try:
        for conn in conns:
            _prepare(conn)
        failures: list[BaseException] = []

        def run(conn: psycopg.Connection, query: sql.Composed, path: Path) -> None:
            try:
                _copy_to_file(conn, query, path, stats_rows)
            except BaseException as exc:  # raised in the caller's thread below
                failures.append(exc)

        threads = [
            threading.Thread(target=run, args=(conn, query, path), daemon=True)
            for conn, (query, path) in zip(conns[1:], jobs[1:], strict=True)
        ]
        for thread in threads:
            thread.start()
        run(conns[0], *jobs[0])
        for thread in threads:
            thread.join()
        if failures:
            raise failures[0]
        for conn in conns:
            conn.rollback()
    finally:
        for conn in conns:
            conn.close()
    _write_stats(stats_rows, stats)
    return DbTotalsFiles(tuple(files), stats)


def _connections_sharing_a_snapshot(dsn: str, count: int) -> list[psycopg.Connection] | None:
    """``count`` read-only REPEATABLE READ connections in one exported snapshot; None when the
    server or a pooler refuses to export or import it (e.g. no EXECUTE on pg_export_snapshot,
    or a pooler that cannot import it on another server connection)."""
    conns: list[psycopg.Connection] = []
    try:
        for _ in range(count):
            conn = read_only(dsn)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conns.append(conn)
        row = conns[0].execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        for conn in conns[1:]:
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(row[0])))
    except psycopg.errors.Error:
        for conn in conns:
            conn.close()
        return None
    except BaseException:
        for conn in conns:
            conn.close()
        raise
    return conns


def _copy_in_one_snapshot(
    dsn: str, jobs: list[tuple[sql.Composed, Path]], stats_rows: list[bytes]
) -> None:
    """Every job, one after another, in one REPEATABLE READ transaction: one snapshot."""
    with read_only(dsn) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        _prepare(conn)
        for query, path in jobs:
            _copy_to_file(conn, query, path, stats_rows)
        conn.rollback()


def _write_stats(rows: list[bytes], out: Path) -> None:
    """The GROUPING SETS query's stats rows as DB_STATS_COLUMNS CSV (zero sums as 0)."""
    with open(out, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        for row in csv.reader(line.decode("utf-8") for line in rows):
            day, has_ids, aligned, records, *sums = row[0], *row[6:]
            writer.writerow([day, aligned, has_ids, records, *(v or "0" for v in sums)])


def fetch_daily_totals(dsn: str, first_day: date, last_day: date) -> list[tuple[object, ...]]:
    """The same grouped result as tuples: for small ranges and tests."""
    with read_only(dsn) as conn:
        rows = conn.execute(daily_totals_query(first_day, last_day)).fetchall()
        conn.rollback()
    return rows


def unrecorded_query(days: Sequence[date], metrics: Sequence[str]) -> sql.Composed:
    """Per asked day: how many compared rows (aligned, with ids) carry each metric (not NULL)."""
    columns = dict(METRIC_COLUMNS)
    counts = sql.SQL(", ").join(
        sql.SQL("count({})").format(sql.Identifier(columns[m])) for m in metrics
    )
    return sql.SQL(
        "SELECT window_start::date, count(*), {counts} FROM usage_events "
        "WHERE window_start::date = ANY({days}) AND "
        + _ALIGNED.removesuffix("::int")
        + " AND "
        + _HAS_IDS.removesuffix("::int")
        + " GROUP BY 1"
    ).format(counts=counts, days=sql.Literal(list(days)))


def unrecorded_metrics(
    dsn: str, days: Sequence[date], metrics: Sequence[str]
) -> dict[date, frozenset[str]]:
    """db_side.UnrecordedProbe: per day, the metrics NULL in every row parity compares.

    Asked only about a few (day, metric) pairs whose DB total is 0 while the export's is
    not, so it costs nothing on a healthy run; one read-only query.
    """
    if not days or not metrics:
        return {}
    with read_only(dsn) as conn:
        rows = conn.execute(unrecorded_query(days, metrics)).fetchall()
        conn.rollback()
    return {
        day: frozenset(m for m, n in zip(metrics, counts, strict=True) if n == 0)
        for day, total, *counts in rows
        if total
    }


def unrecorded_probe(
    dsn: str,
) -> Callable[[Sequence[date], Sequence[str]], dict[date, frozenset[str]]]:
    """A db_side.UnrecordedProbe bound to ``dsn``."""

    def probe(days: Sequence[date], metrics: Sequence[str]) -> dict[date, frozenset[str]]:
        return unrecorded_metrics(dsn, days, metrics)

    return probe


def totals_writer(dsn: str, parts: int = 2) -> Callable[[date, date, Path], DbTotalsFiles]:
    """A db_side.DbTotalsWriter bound to ``dsn``: the files it wrote."""

    def write(first_day: date, last_day: date, out: Path) -> DbTotalsFiles:
        return copy_daily_totals_parallel(dsn, first_day, last_day, out, parts)

    return write


__all__ = [
    "copy_daily_totals",
    "copy_daily_totals_parallel",
    "daily_stats_query",
    "daily_totals_query",
    "fetch_daily_totals",
    "split_days",
    "totals_writer",
    "unrecorded_metrics",
    "unrecorded_probe",
]
