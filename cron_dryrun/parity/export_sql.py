"""The export side's SQL, as text: how DuckDB reads, types and checks an export.

``fast_rows_sql``: one typed read (metrics as DOUBLE, the key text trimmed, a per-row
``ok``); ``delimited_rows_sql``: the exact reader, every cell as text and every rule of
formats' reference checked in SQL, with the reason a row is bad. Pure: builds strings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cron_dryrun.parity.formats import (
    KEY_TEXT_COLUMNS,
    MAX_EXACT,
    METRICS,
    TIME_COLUMNS,
    TOTALS_COLUMNS,
    ExportFormat,
    key_hash_sql,
)

if TYPE_CHECKING:
    pass


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _c(name: str) -> str:
    """The trimmed cell of ``name`` as layer 1 of delimited_rows_sql exposes it."""
    return quote_name("c_" + name)


def sql_time(columns: Sequence[str], name: str, cell: Callable[[str], str] = _c) -> tuple[str, str]:
    """(value expr, label expr) over layer-1 cells, mirroring parse_time/time_label."""
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
    columns = ", ".join(f"{quote_text(c)}: 'VARCHAR'" for c in (*cols, "__extra__"))
    reader = (
        f"read_csv({quote_text(str(path))}, columns={{{columns}}}, header=true, auto_detect=false, "
        f"delim={quote_text(fmt.delimiter)}, quote='\"', escape='\"', null_padding=true, "
        f"strict_mode=false, nullstr='\x01', encoding='utf-8'{fmt.duckdb_options()})"
    )
    start, start_label = sql_time(cols, "start_time")
    end, end_label = sql_time(cols, "end_time")
    text = {
        c: (f"trim(coalesce({quote_name(c)}, ''))" if c in cols else "''")
        for c in (*KEY_TEXT_COLUMNS, "batch")
    }
    present = " + ".join(f"CAST({quote_name(c)} IS NOT NULL AS INTEGER)" for c in cols)
    layer1 = (
        f"SELECT ordinality AS rec, {quote_name('__extra__')} IS NOT NULL AS too_long, "
        f"{quote_name(cols[-1])} IS NULL AS too_short, ({present}) AS ncells, "
        + ", ".join(f"{text[c]} AS {quote_name(c)}" for c in KEY_TEXT_COLUMNS)
        + f", {text['batch']} AS batch_cell"
        + "".join(f", {quote_name(c)} AS {_c(c)}" for c in cols if c in TIME_COLUMNS)
        + "".join(
            f", {quote_name(m)} AS {_c(m)}, TRY_CAST({quote_name(m)} AS DOUBLE) AS {quote_name('d_' + m)}"
            for m in fmt.metrics
        )
        + f" FROM {reader} WITH ORDINALITY"
    )
    # mirrors parse_count: NULL unless a whole, non-negative, exactly representable number
    counts = "".join(
        f", CASE WHEN {quote_name('d_' + m)} >= 0 AND {quote_name('d_' + m)} = floor({quote_name('d_' + m)}) "
        f"AND {quote_name('d_' + m)} <= {MAX_EXACT} THEN CAST({quote_name('d_' + m)} AS BIGINT) "
        f"WHEN {quote_name('d_' + m)} IS NULL AND trim(coalesce({_c(m)}, '')) = '' THEN 0 END "
        f"AS {quote_name('v_' + m)}"
        for m in fmt.metrics
    )
    layer2 = f"SELECT *, {start} AS bstart, {end} AS bend{counts} FROM ({layer1})"
    quote = "''''"
    metric_checks = " ".join(
        f"WHEN {quote_name('v_' + m)} IS NULL "
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
        f"coalesce({quote_name('v_' + m)}, 0) AS {quote_name(m)}"
        if m in fmt.metrics
        else f"0::BIGINT AS {quote_name(m)}"
        for m in METRICS
    )
    no_usage = (
        " AND ".join(f"coalesce({quote_name('v_' + m)}, 0) = 0" for m in fmt.metrics) or "true"
    )
    return (
        f"SELECT rec, {problem} AS problem, bstart, bend, project_id, api_key_id, user_id, model, "
        f"service_tier, lower(batch_cell) IN ('true', '1') AS batch, {metric_out}, "
        f"(project_id = '' AND api_key_id = '' AND user_id = '' AND model = '' AND {no_usage}) "
        f"AS is_empty FROM ({layer2})"
    )


def totals_table_ddl(table: str, key_hash: bool = False) -> str:
    """A table in TOTALS_COLUMNS layout (what both sides' key-day rows are compared in),
    and the key hash ``kh`` after them when asked (the export's key-days: formats.key_hash_sql)."""
    types = {"day": "DATE", "batch": "BOOLEAN", "aligned": "BOOLEAN"}
    cols = ", ".join(
        f"{quote_name(c)} {types.get(c, 'VARCHAR' if c in KEY_TEXT_COLUMNS else 'BIGINT')}"
        for c in TOTALS_COLUMNS
    )
    return f"CREATE TEMP TABLE {table} ({cols}{', kh UBIGINT' if key_hash else ''})"


def typed_cell(name: str) -> str:
    """A cell of the typed reader: empty cells are NULL there."""
    return f"coalesce({quote_name(name)}, '')"


def trimmed_cell(name: str) -> str:
    """A typed reader's text cell, trimmed exactly as ``trim`` trims it (the Unicode space
    separators: the space, NBSP, U+3000 ...; not tabs or line breaks): a cell of ASCII only
    (as many bytes as characters) that neither starts nor ends with a space is kept as it
    is, which ``trim`` would do too, since the space is the one ASCII separator; any other
    cell is trimmed. Trimming every id of a 1M-row export was the typed pass's largest per-row
    cost (each id copied); byte tests, where the first and last characters were cut out
    before, take a quarter less (benchmarks/README.md)."""
    q = quote_name(name)
    kept = f"NOT starts_with({q}, ' ') AND NOT ends_with({q}, ' ') AND strlen({q}) = length({q})"
    return f"CASE WHEN {kept} THEN {q} ELSE trim({typed_cell(name)}) END"


def fast_rows_sql(path: Path, fmt: ExportFormat) -> str:
    """Every row typed by DuckDB's reader: metrics as DOUBLE, the rest as text.

    A cell the reader cannot type, or a row of the wrong length, makes the query fail
    (strict mode); the caller then falls back to ``load_delimited_exact``. Per row:
    bstart/bend (as ``delimited_rows_sql`` computes them), the trimmed key text, batch,
    ``ok`` (the batch cell is TRUE/FALSE/1/0/empty and every count whole, non-negative
    and at most FAST_MAX_COUNT), the counts as UINTEGER and the key hash ``kh``
    (formats.key_hash_sql, as the database side's). Kept narrow on purpose: the
    rows of a 1M-row export are held in memory until the comparison is done.
    """
    types = {c: ("DOUBLE" if c in fmt.metrics else "VARCHAR") for c in fmt.columns}
    columns = ", ".join(f"{quote_text(c)}: {quote_text(t)}" for c, t in types.items())
    reader = (
        f"read_csv({quote_text(str(path))}, columns={{{columns}}}, header=true, auto_detect=false, "
        f"delim={quote_text(fmt.delimiter)}, quote='\"', escape='\"', strict_mode=true, "
        f"encoding='utf-8', buffer_size={CSV_BUFFER_BYTES}{fmt.duckdb_options()})"
    )
    # with ISO columns the epoch ones are not read: a row whose ISO cell is empty gets no
    # time here and goes to the exact path, which falls back to the epoch as the rules say
    times = [
        c
        for c in fmt.columns
        if not (c in ("start_time", "end_time") and f"{c}_iso" in fmt.columns)
    ]
    start, _ = sql_time(times, "start_time", typed_cell)
    end, _ = sql_time(times, "end_time", typed_cell)
    text = ", ".join(
        (trimmed_cell(c) if c in fmt.columns else "''") + f" AS {quote_name(c)}"
        for c in KEY_TEXT_COLUMNS
    )
    batch = f"lower(trim({typed_cell('batch')}))" if "batch" in fmt.columns else "''"
    ok = " AND ".join(
        [
            "batch_cell IN ('true', 'false', '1', '0', '')",
            # whole, 0 <= count <= FAST_MAX_COUNT: exactly what casts to UINTEGER unchanged
            # (a fraction rounds, a negative or larger count casts to NULL); the same cast
            # as the stored count, computed once for both
            *(
                f"coalesce(TRY_CAST({quote_name(m)} AS UINTEGER) = {quote_name(m)}, "
                f"{quote_name(m)} IS NULL)"
                for m in fmt.metrics
            ),
        ]
    )
    counts = ", ".join(
        (
            f"coalesce(TRY_CAST({quote_name(m)} AS UINTEGER), 0)"
            if m in fmt.metrics
            else "0::UINTEGER"
        )
        + f" AS {quote_name(m)}"
        for m in METRICS
    )
    key_hash = key_hash_sql(batch="batch_cell IN ('true', '1')")
    return (
        f"SELECT bstart, bend, {', '.join(quote_name(c) for c in KEY_TEXT_COLUMNS)}, "
        f"batch_cell IN ('true', '1') AS batch, {ok} AS ok, {counts}, {key_hash} AS kh "
        f"FROM (SELECT *, "
        f"{start} AS bstart, {end} AS bend, {batch} AS batch_cell FROM (SELECT {text}, "
        f"{', '.join(quote_name(c) for c in fmt.columns if c not in KEY_TEXT_COLUMNS)} FROM {reader}))"
    )


# The typed reader's buffer (DuckDB's default is 32 MB, a few held per thread): the
# memory they take is the staged tables' under the one limit (duck.DUCKDB_MEMORY_LIMIT),
# and at 1M rows a smaller buffer spills less and reads no slower (benchmarks/README.md).
# It must hold the longest line (DuckDB's max_line_size, 2 MB by default).
CSV_BUFFER_BYTES = 4 << 20

# The fast path stores counts as UINTEGER; a larger count (never seen per bucket and key)
# is not an error: that file is read by the exact path instead.
FAST_MAX_COUNT = 2**32 - 1
