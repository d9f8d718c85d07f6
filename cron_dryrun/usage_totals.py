"""The database side of the parity diff: one grouped, read-only query over usage_events.

PostgreSQL adds up the rows (daily totals per key); we never pull rows. The result is
streamed, as chunks of CSV text through a server-side cursor, straight to a file in
``exports.TOTALS_COLUMNS`` layout, which the reconciler loads into DuckDB: 1M groups
never become 1M Python objects.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, time, timedelta
from pathlib import Path

from psycopg import sql

from cron_dryrun.database import read_only
from cron_dryrun.exports import METRIC_COLUMNS

CHUNK_ROWS = 20_000


def daily_totals_query(first_day: date, last_day: date) -> sql.Composed:
    """Daily totals per key for windows starting in [first_day, last_day] (UTC, inclusive).

    ``window_start``/``window_end`` are ``timestamp without time zone`` holding UTC. A row
    whose window lies inside one UTC day rolls up into that day (``aligned``); a window
    crossing midnight (the flag-off shape) is grouped apart, counted, and not compared.
    NULL ids and tier become '' and NULL batch false, as the app's unique index does.
    """
    start = datetime.combine(first_day, time(0))
    end = datetime.combine(last_day + timedelta(days=1), time(0))
    metric_sums = sql.SQL(", ").join(
        sql.SQL("coalesce(sum({}), 0) AS {}").format(
            sql.Identifier(column), sql.Identifier(f"m_{name}")
        )
        for name, column in METRIC_COLUMNS
    )
    return sql.SQL(
        "SELECT window_start::date AS day, coalesce(project_id, '') AS project_id, "
        "coalesce(openai_api_key_id, '') AS api_key_id, coalesce(openai_user_id, '') AS user_id, "
        "model, coalesce(service_tier, '') AS service_tier, coalesce(batch, false)::int AS batch, "
        "(window_end IS NOT NULL AND window_end > window_start "
        "AND window_end <= date_trunc('day', window_start) + interval '1 day')::int AS aligned, "
        "count(*) AS record_count, {metric_sums} "
        "FROM usage_events WHERE window_start >= {start} AND window_start < {end} "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8"
    ).format(metric_sums=metric_sums, start=sql.Literal(start), end=sql.Literal(end))


def totals_csv_query(first_day: date, last_day: date, chunk_rows: int = CHUNK_ROWS) -> sql.Composed:
    """The grouped result as CSV text, ``chunk_rows`` lines per result row.

    Why: COPY and row fetches cost one Python step per group (about 5 s per 1M groups);
    chunks of CSV text cost one per ``chunk_rows`` groups and go straight to a file.
    """
    text = ("project_id", "api_key_id", "user_id", "model", "service_tier")
    fields = sql.SQL(", ").join(
        [sql.SQL("g.day::text")]
        + [
            sql.SQL("'\"' || replace(g.{}, '\"', '\"\"') || '\"'").format(sql.Identifier(c))
            for c in text
        ]
        + [sql.SQL("g.{}").format(sql.Identifier(c)) for c in ("batch", "aligned", "record_count")]
        + [sql.SQL("g.{}").format(sql.Identifier(f"m_{name}")) for name, _ in METRIC_COLUMNS]
    )
    return sql.SQL(
        "SELECT string_agg(line, E'\\n') || E'\\n' FROM (SELECT concat_ws(',', {fields}) AS line, "
        "(row_number() OVER ()) / {chunk} AS chunk FROM ({grouped}) g) lines GROUP BY chunk"
    ).format(
        fields=fields,
        chunk=sql.Literal(chunk_rows),
        grouped=daily_totals_query(first_day, last_day),
    )


def copy_daily_totals(dsn: str, first_day: date, last_day: date, out: Path) -> int:
    """Write the grouped result to ``out`` as TOTALS_COLUMNS CSV (no header); bytes written.

    One read-only transaction; ``work_mem`` is raised for it alone so PostgreSQL keeps the
    hash aggregate of ~1M groups in memory instead of sorting on disk.
    """
    written = 0
    with read_only(dsn) as conn, open(out, "w", encoding="utf-8", newline="") as fh:
        conn.execute("SET LOCAL work_mem = '256MB'")
        with conn.cursor(name="cron_dryrun_daily_totals") as cur:
            cur.itersize = 4
            cur.execute(totals_csv_query(first_day, last_day))
            for (chunk,) in cur:
                if chunk:
                    written += fh.write(chunk)
        conn.rollback()  # read-only transaction: nothing to keep
    return written


def fetch_daily_totals(dsn: str, first_day: date, last_day: date) -> list[tuple[object, ...]]:
    """The same grouped result as tuples: for small ranges and tests."""
    with read_only(dsn) as conn:
        rows = conn.execute(daily_totals_query(first_day, last_day)).fetchall()
        conn.rollback()
    return rows


def totals_writer(dsn: str) -> Callable[[date, date, Path], None]:
    """A reconcile.DbTotalsWriter bound to ``dsn``."""

    def write(first_day: date, last_day: date, out: Path) -> None:
        copy_daily_totals(dsn, first_day, last_day, out)

    return write


__all__ = [
    "copy_daily_totals",
    "daily_totals_query",
    "fetch_daily_totals",
    "totals_csv_query",
    "totals_writer",
]
