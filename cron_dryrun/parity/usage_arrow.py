"""The database side of the parity diff over ADBC: usage_events as an Arrow stream into DuckDB.

PostgreSQL only scans: the rows of the day range leave the server as binary COPY, which
the Apache Arrow ADBC PostgreSQL driver (``adbc-driver-postgresql``, libpq and the COPY
parser in C++) turns into Arrow batches. The statement's stream goes to DuckDB through
the Arrow PyCapsule interface (``__arrow_c_stream__``; no pyarrow). DuckDB copies the
rows into ``db_side.DB_KEYDAYS_TABLE``; when some key-day spans several rows (hourly
windows, or two provider keys reporting the same ids) it groups them there, and it sums
the key-days per (day, aligned, has ids) into ``db_side.DB_STATS_TABLE``: no row
reaches Python. Text was the cost of the
CSV path (PostgreSQL grouping and formatting ~4.5 CPU-s for 1M key-days).

Three reads, the first that fits: the slim read (``slim_rows_sql``: packed, no key text
kept; the keys of the key-days without an export twin fetched by id once the export side
offers its twins, ``db_side.TwinExchange``), when every row is its own key-day; the
packed read (``packed_rows_sql``: the key kept joined), when some key-day repeats or
there are no twins to wait for; the rows as they are (``rows_sql``), when a key cell
holds the separator.

The grouping is exactly ``usage_totals.daily_totals_query``'s: ``day`` and ``aligned``
are computed by PostgreSQL with the same expressions; NULL ids and tier become '' and
NULL batch false. One difference is kept on purpose: a key-day's metric sum is NULL when
no row of it recorded the metric (the CSV path sends 0), so a metric NULL in every row
stays distinguishable from 0 (``recorded_<metric>`` in the stats table); the comparison
reads NULL as 0, as before.

One connection, one read-only REPEATABLE READ transaction: everything the diff reads
from the database is one snapshot. Whether this path is used at all, and the fallback to
the CSV path, is decided in ``db_reader`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple

from cron_dryrun.parity.db_side import (
    D_CAND_TABLE,
    D_TWINS_TABLE,
    DB_KEYDAYS_TABLE,
    DB_STATS_TABLE,
    E_TWINS_TABLE,
    TwinExchange,
    db_stats_sql,
    keyday_cells_sql,
)
from cron_dryrun.parity.formats import (
    KEY_TEXT_COLUMNS,
    METRIC_COLUMNS,
    METRICS,
    joined_key_sql,
    key_has_ids_sql,
    key_hash_sql,
    twin_hash_sql,
    unsplittable_key_sql,
)

# the same expression as usage_totals: a window inside one UTC day rolls up into it
ALIGNED_SQL = (
    "(window_end IS NOT NULL AND window_end > window_start "
    "AND window_end <= window_start::date + 1)"
)
# Arrow batches of this size (the driver's default is 16 MB): DuckDB's scan holds a few
BATCH_BYTES = 2 << 20
_STREAM = "usage_events_stream"
_ROWS = "db_rows"
TYPE_RESOLVER_OPTION = (
    "adbc.postgresql.type_resolver_mode"  # the copied rows, while they are grouped
)
# usage_events column -> the TOTALS_COLUMNS key it becomes
_TEXT_SOURCES = {
    "project_id": "project_id",
    "api_key_id": "openai_api_key_id",
    "user_id": "openai_user_id",
    "model": "model",
    "service_tier": "service_tier",
}


def _timestamp(day: date) -> str:
    return f"TIMESTAMP '{datetime.combine(day, time(0)).isoformat(sep=' ')}'"


def rows_query(first_day: date, last_day: date) -> str:
    """usage_events rows whose window starts in [first_day, last_day] (UTC), ungrouped.

    ``window_start``/``window_end`` are ``timestamp without time zone`` holding UTC; the
    day and the alignment flag leave the server as a date and a boolean (5 bytes instead
    of two timestamps); the metric columns as they are (int4).
    """
    start, end = _timestamp(first_day), _timestamp(last_day + timedelta(days=1))
    metrics = ", ".join(f'"{column}" AS "{name}"' for name, column in METRIC_COLUMNS)
    texts = ", ".join(f'"{column}" AS "{key}"' for key, column in _TEXT_SOURCES.items())
    return (
        f"SELECT window_start::date AS day, {ALIGNED_SQL} AS aligned, {texts}, batch, "
        f"{metrics} FROM usage_events "
        f"WHERE window_start >= {start} AND window_start < {end}"
    )


# The packed read: what leaves the server per row is 10 fields instead of 22, because
# PostgreSQL's binary COPY and the ADBC driver's parse cost per field (~75 ns each in the
# driver): day, alignment and batch in one int4; the five key cells joined in one text
# (formats.joined_key_sql); the 14 int4 metrics two to an int8; one int4 whose bits say
# which metrics are NULL. 1M rows: 3.0-3.4 CPU-s client and server together, against
# 3.8-4.2 for the 22 fields (benchmarks/README.md). DuckDB takes them apart again.
_DAY_ZERO = "DATE '2000-01-01'"
_PAIRS = [list(METRIC_COLUMNS[i : i + 2]) for i in range(0, len(METRIC_COLUMNS), 2)]
# PostgreSQL: the key cells joined, '' for NULL (as the app's unique index reads them)
_PG_JOINED_KEY = joined_key_sql([f"coalesce({c}, '')" for c in _TEXT_SOURCES.values()])


def packed_rows_query(first_day: date, last_day: date, with_id: bool = False) -> str:
    """PostgreSQL: usage_events rows of [first_day, last_day] (UTC), ungrouped, packed.

    ``flags``: (day - 2000-01-01) * 8 + aligned * 4 + batch; ``k``: the key
    cells joined ('' for NULL, as the app's unique index reads them); ``p0``..: two metrics
    each, the first in the high 32 bits (NULL as 0); ``nullmask``: bit i set when the i-th
    metric (METRIC_COLUMNS order) is NULL; ``id`` when asked (the slim read).
    """
    start, end = _timestamp(first_day), _timestamp(last_day + timedelta(days=1))
    flags = (
        f"((window_start::date - {_DAY_ZERO}) * 8 + ({ALIGNED_SQL})::int * 4 "
        f"+ coalesce(batch, false)::int)"
    )
    pairs = []
    for i, pair in enumerate(_PAIRS):
        high = f'(coalesce("{pair[0][1]}", 0)::int8 << 32)'
        low = f'(coalesce("{pair[1][1]}", 0)::int8 & 4294967295)' if len(pair) > 1 else "0"
        pairs.append(f"{high} | {low} AS p{i}")
    bits = " | ".join(f'(("{c}" IS NULL)::int << {i})' for i, (_, c) in enumerate(METRIC_COLUMNS))
    # the bits are built only for a row with some NULL: one call decides for the others
    # (the mask's 27 operators were a fifth of the backend's time)
    any_null = "num_nulls(" + ", ".join(f'"{c}"' for _, c in METRIC_COLUMNS) + ")"
    nulls = f"CASE WHEN {any_null} = 0 THEN 0 ELSE {bits} END"
    return (
        f"SELECT {flags} AS flags, {_PG_JOINED_KEY} AS k, {', '.join(pairs)}, ({nulls}) AS nullmask"
        f"{', id' if with_id else ''} "
        f"FROM usage_events WHERE window_start >= {start} AND window_start < {end}"
    )


def _unpacked_metrics() -> list[str]:
    """DuckDB: each metric out of its pair, NULL where the mask says so."""
    metrics = []
    for i, pair in enumerate(_PAIRS):
        for j, (name, _) in enumerate(pair):
            bit = 1 << METRICS.index(name)
            if j == 0:
                value = f"(p{i} >> 32)"
            else:  # the low 32 bits, read back as a signed int4
                low = f"(p{i} & 4294967295)"
                value = f"({low} - (({low} >> 31) << 32))"
            metrics.append(f'CASE WHEN nullmask & {bit} = 0 THEN {value} END::INTEGER AS "{name}"')
    return metrics


_BATCH = "(flags & 1) <> 0"
_FLAG_COLUMNS = (
    f"{_DAY_ZERO} + CAST(flags >> 3 AS INTEGER) AS day",
    f"{_BATCH} AS batch",
    "(flags & 4) <> 0 AS aligned",
    f"{key_has_ids_sql('k')} AS has_ids",
)


def packed_rows_sql(stream: str = _STREAM) -> str:
    """DuckDB: the packed stream's rows unpacked into the key-day table (``k`` kept joined;
    the comparison splits only the key-days it reports), with the key hash ``kh``
    (formats.key_hash_sql, as the export side's). A metric NULL in the row is NULL."""
    day, batch, aligned, has_ids = _FLAG_COLUMNS
    return (
        f"CREATE TABLE {DB_KEYDAYS_TABLE} AS SELECT {day}, k, {batch}, {aligned}, {has_ids}, "
        f"1::BIGINT AS record_count, {', '.join(_unpacked_metrics())}, "
        f"{key_hash_sql('k', _BATCH)} AS kh FROM {stream}"
    )


def slim_rows_sql(stream: str = _STREAM) -> str:
    """DuckDB: the packed stream (with ``id``) into the key-day table without its key text,
    which is most of a row's memory: the row's id, the key hash ``kh``, and whether its key
    could not be split back (``unsplittable``: a cell holding the separator)."""
    return (
        f"CREATE TABLE {DB_KEYDAYS_TABLE} AS SELECT {', '.join(_FLAG_COLUMNS)}, id, "
        f"{', '.join(_unpacked_metrics())}, {key_hash_sql('k', _BATCH)} AS kh, "
        f"{unsplittable_key_sql('k')} AS unsplittable FROM {stream}"
    )


def slim_checks_sql(table: str = DB_KEYDAYS_TABLE) -> str:
    """rows, distinct key-day hashes (equal when no key-day repeats), unsplittable keys."""
    return (
        f"SELECT count(*), count(DISTINCT hash(day, kh, aligned)), "
        f"count(*) FILTER (WHERE unsplittable) FROM {table}"
    )


def keys_query(ids: Sequence[int]) -> str:
    """PostgreSQL: the joined key of the usage_events rows ``ids`` (integers only)."""
    listed = ",".join(str(int(i)) for i in ids)
    return (
        f"SELECT id, {_PG_JOINED_KEY} AS k FROM usage_events WHERE id = ANY('{{{listed}}}'::int8[])"
    )


_PACKED_KEY = ("day", "k", "batch", "aligned", "kh")


def packed_checks_sql(table: str = DB_KEYDAYS_TABLE) -> str:
    """rows, distinct key-day hashes (equal when no key-day repeats), and keys that cannot be
    split back into five cells (a cell holding the separator: then the rows are read
    again, unpacked)."""
    return (
        f"SELECT count(*), count(DISTINCT hash(day, kh, aligned)), "
        f"count(*) FILTER (WHERE {unsplittable_key_sql('k')}) FROM {table}"
    )


def packed_keydays_sql(source: str) -> str:
    """``keydays_sql`` for the packed layout: grouped on the joined key."""
    sums = ", ".join(f'sum_no_overflow("{m}")::BIGINT AS "{m}"' for m in METRICS)
    return (
        f"CREATE TABLE {DB_KEYDAYS_TABLE} AS SELECT {', '.join(_PACKED_KEY)}, has_ids, "
        f"sum(record_count)::BIGINT AS record_count, {sums} FROM {source} GROUP BY ALL"
    )


def rows_sql(stream: str = _STREAM) -> str:
    """DuckDB: the stream's rows as they are, in TOTALS_COLUMNS layout (one record each).

    Most usage_events rows are key-days already (the cron writes one row per key-day);
    copying them as rows is ~0.1 CPU-s per 1M where grouping the stream is ~1.7
    (benchmarks/README.md). ``rows_are_keydays_sql`` then says whether they may stand as
    the key-day table.
    """
    texts = ", ".join(f"coalesce({k}, '') AS {k}" for k in KEY_TEXT_COLUMNS)
    metrics = ", ".join(f'"{m}"' for m in METRICS)
    return (
        f"CREATE TABLE {DB_KEYDAYS_TABLE} AS SELECT day, {texts}, "
        f"coalesce(batch, false) AS batch, aligned, 1::BIGINT AS record_count, {metrics} "
        f"FROM {stream}"
    )


_GROUP_KEY = ("day", *KEY_TEXT_COLUMNS, "batch", "aligned")


def rows_are_keydays_sql(table: str = DB_KEYDAYS_TABLE) -> str:
    """rows, and distinct (key-day, aligned) hashes: equal when no key-day repeats.

    A hash collision can only lower the distinct count: then the rows are grouped, which
    is always right, only slower (as the export side does, ``staging.key_days_relation``).
    """
    return f"SELECT count(*), count(DISTINCT hash({', '.join(_GROUP_KEY)})) FROM {table}"


def keydays_sql(source: str) -> str:
    """DuckDB: ``source``'s rows (``rows_sql`` layout) grouped per key-day.

    ``sum_no_overflow``: the int4 metrics are summed in 64 bits (a key-day would need
    2^32 rows to overflow); plain ``sum`` keeps 128-bit accumulators. A sum over only
    NULLs stays NULL.
    """
    sums = ", ".join(f'sum_no_overflow("{m}")::BIGINT AS "{m}"' for m in METRICS)
    return (
        f"CREATE TABLE {DB_KEYDAYS_TABLE} AS SELECT {', '.join(_GROUP_KEY)}, "
        f"sum(record_count)::BIGINT AS record_count, {sums} FROM {source} GROUP BY ALL"
    )


class LoadedKeyDays(NamedTuple):
    """What ``load_keydays`` made: ``grouped``, some key-day spanned several rows and they
    were summed; ``keyed``, the key-day table holds the joined key ``k`` (the packed read)
    instead of the five key cells; ``slim``, it holds no key text, and the twins were
    matched (db_side.DbTotalsFiles.slim)."""

    grouped: bool
    keyed: bool
    slim: bool = False


def load_keydays(
    conninfo: str,
    first_day: date,
    last_day: date,
    duck: Any,
    twins: TwinExchange | None = None,
) -> LoadedKeyDays:
    """Read the range's rows over ADBC into ``duck`` as the key-day and stats tables.

    ``conninfo``: a libpq connection string (URL or keywords), used as given. Raises
    ImportError when the driver is not installed, the driver's errors (adbc_driver_manager
    .Error subclasses) for anything the server or libpq refused, and DuckDB's errors; on
    any error neither table exists afterwards. The packed read first; when a key cell holds
    the separator, the rows as they are, in the same transaction (so the same snapshot).

    ``twins`` (the export's, offered once it is read): the slim read first, which keeps no
    key text (most of a row's memory, while the export is staged beside it); after the
    offer, the key-days without a twin are fetched again with their key, by id, in the same
    transaction. Rows that repeat a key-day, or a key cell holding the separator, send it
    to the packed read.
    """
    import adbc_driver_manager
    import adbc_driver_postgresql  # type: ignore[import-untyped]

    database = _open_database(adbc_driver_manager, adbc_driver_postgresql, conninfo)
    try:
        connection = adbc_driver_manager.AdbcConnection(database)
        try:
            connection.set_autocommit(False)  # the driver opens a transaction: make it ours
            statement = adbc_driver_manager.AdbcStatement(connection)
            try:
                for setting in (
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                    # a parallel plan only adds a gather step to a scan this simple
                    "SET LOCAL max_parallel_workers_per_gather = 0",
                ):
                    statement.set_sql_query(setting)
                    statement.execute_update()
                statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(BATCH_BYTES)})
                loaded: LoadedKeyDays | None = None
                if twins is not None:
                    statement.set_sql_query(packed_rows_query(first_day, last_day, with_id=True))
                    if _read_stream(duck, statement.execute_query()[0], _SLIM) is not None:
                        _match_twins(statement, duck, twins)
                        loaded = LoadedKeyDays(grouped=False, keyed=True, slim=True)
                if loaded is None:
                    statement.set_sql_query(packed_rows_query(first_day, last_day))
                    grouped = _read_stream(duck, statement.execute_query()[0], _PACKED)
                    loaded = None if grouped is None else LoadedKeyDays(grouped, keyed=True)
                if loaded is None:
                    statement.set_sql_query(rows_query(first_day, last_day))
                    grouped = _read_stream(duck, statement.execute_query()[0], _ROWS_AS_THEY_ARE)
                    loaded = LoadedKeyDays(bool(grouped), keyed=False)
            finally:
                statement.close()
            connection.rollback()  # read-only: nothing to keep
            return loaded
        finally:
            connection.close()
    finally:
        database.close()


def _open_database(manager: Any, driver: Any, conninfo: str) -> Any:
    """The driver's database handle, with its built-in type table.

    By default the driver opens a connection of its own just to read the server's type
    catalog (~35 ms); the query reads only built-in types (date, boolean, text, int4), which
    its built-in table maps alike. A column of another type fails the read, and the diff
    falls back to the CSV path, saying why. A driver without the option connects as before.
    """
    try:
        return driver.connect(conninfo, db_kwargs={TYPE_RESOLVER_OPTION: "builtin"})
    except manager.NotSupportedError:
        return driver.connect(conninfo)


# ids per query when fetching the unmatched key-days' keys (a literal array: 10,000 ids
# are ~80 KB of query text; PostgreSQL finds them by the primary key)
FETCH_IDS = 10_000
_KEYS, _KEY_STREAM = "d_keys", "d_keys_stream"


def _match_twins(statement: Any, duck: Any, twins: TwinExchange) -> None:
    """Once the export's twins are offered: D_TWINS_TABLE (every compared key-day's twin)
    and D_CAND_TABLE (those without an export twin, their key fetched again by id, in
    TOTALS_COLUMNS, NULL sums read as 0). Withdrawn: nothing more (the run is failing)."""
    metrics = twins.wait()
    if metrics is None:
        return
    duck.execute(
        f"CREATE TABLE {D_TWINS_TABLE} AS SELECT id, {twin_hash_sql(metrics)} AS h "
        f"FROM {DB_KEYDAYS_TABLE} WHERE aligned AND has_ids"
    )
    ids = [
        i
        for (i,) in duck.execute(
            f"SELECT id FROM {D_TWINS_TABLE} WHERE h NOT IN (SELECT h FROM {E_TWINS_TABLE}) "
            "ORDER BY id"
        ).fetchall()
    ]
    duck.execute(f"CREATE TABLE {_KEYS} (id BIGINT, k VARCHAR)")
    for at in range(0, len(ids), FETCH_IDS):
        statement.set_sql_query(keys_query(ids[at : at + FETCH_IDS]))
        stream, _ = statement.execute_query()
        duck.register(_KEY_STREAM, stream)
        try:
            duck.execute(f"INSERT INTO {_KEYS} SELECT id, k FROM {_KEY_STREAM}")
        finally:
            duck.unregister(_KEY_STREAM)
    metric_cols = ", ".join(f'coalesce("{m}", 0) AS "{m}"' for m in METRICS)
    keyed = (
        f"(SELECT day, k, batch, aligned, 1::BIGINT AS record_count, {metric_cols} "
        f"FROM {DB_KEYDAYS_TABLE} JOIN {_KEYS} USING (id) WHERE aligned AND has_ids)"
    )
    duck.execute(f"CREATE TABLE {D_CAND_TABLE} AS {keyday_cells_sql(keyed)}")
    duck.execute(f"DROP TABLE {_KEYS}")


class _Read(NamedTuple):
    """One way of reading the stream into the key-day and stats tables (the three reads)."""

    create: str  # CREATE TABLE DB_KEYDAYS_TABLE AS ... FROM _STREAM
    checks: str  # rows, distinct key-days[, keys that cannot be split back]
    group: Callable[[str], str] | None  # the grouping over a source; None: repeats refuse
    stats: str


_SLIM = _Read(
    slim_rows_sql(), slim_checks_sql(), None, db_stats_sql(has_ids="has_ids", records="count(*)")
)
_PACKED = _Read(
    packed_rows_sql(), packed_checks_sql(), packed_keydays_sql, db_stats_sql(has_ids="has_ids")
)
_ROWS_AS_THEY_ARE = _Read(rows_sql(), rows_are_keydays_sql(), keydays_sql, db_stats_sql())


def _read_stream(duck: Any, stream: Any, read: _Read) -> bool | None:
    """DuckDB scans the Arrow C stream (consumed once) into the key-day and stats tables;
    tables or nothing. True when the rows had to be grouped (some key-day spans several
    rows); None, and no table, when ``read`` refuses them (a key that cannot be split
    back, or repeats it cannot group): the next read decides."""
    # the package, not only the engine (duck.duckdb_engine): its import registers the
    # Python-side Arrow sources, without which the engine refuses any Python Arrow object
    import duckdb  # noqa: F401

    duck.register(_STREAM, stream)
    try:
        duck.execute(read.create)
        rows, distinct, *unsplittable = duck.execute(read.checks).fetchall()[0]
        grouped = bool(rows != distinct)
        if any(unsplittable) or (grouped and read.group is None):
            drop_tables(duck)
            return None
        if grouped and read.group is not None:
            duck.execute(f"ALTER TABLE {DB_KEYDAYS_TABLE} RENAME TO {_ROWS}")
            duck.execute(read.group(_ROWS))
            duck.execute(f"DROP TABLE {_ROWS}")
        duck.execute(f"CREATE TABLE {DB_STATS_TABLE} AS {read.stats}")
    except BaseException:
        drop_tables(duck)
        raise
    finally:
        duck.unregister(_STREAM)
    return grouped


def drop_tables(duck: Any) -> None:
    """Whatever this path created in ``duck``, gone (before the CSV path takes over)."""
    for table in (DB_STATS_TABLE, DB_KEYDAYS_TABLE, _ROWS, D_TWINS_TABLE, D_CAND_TABLE, _KEYS):
        duck.execute(f"DROP TABLE IF EXISTS {table}")


__all__ = [
    "LoadedKeyDays",
    "drop_tables",
    "keydays_sql",
    "load_keydays",
    "packed_checks_sql",
    "packed_keydays_sql",
    "packed_rows_query",
    "packed_rows_sql",
    "rows_are_keydays_sql",
    "rows_query",
    "rows_sql",
]
