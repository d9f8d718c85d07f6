"""The database side's contract: what a reader of usage_events delivers, in which layout.

``DbTotalsFiles`` (CSV files, or tables a ``DbLoader`` filled in the comparison's own
DuckDB), the stats layout and the views the comparison joins (``db_views``): what the
database side and the comparison share. It calls no parity module but formats, so the
comparison using it never steps back into the database stage (tests/test_parity_walk.py).
It never talks to PostgreSQL: db_stage runs the read (db_reader, usage_arrow,
usage_totals).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cron_dryrun.parity.formats import (
    HAS_IDS_SQL,
    KEY_TEXT_COLUMNS,
    METRICS,
    TOTALS_COLUMNS,
    split_key_sql,
    sql_path,
)

if TYPE_CHECKING:
    pass


DB_READERS = ("adbc", "copy-csv")


@dataclass(frozen=True)
class DbTotalsFiles:
    """What the database side delivered.

    ``copy-csv``: headerless TOTALS_COLUMNS CSV files, and optionally the database's own
    per-(day, aligned, has ids) sums as DB_STATS_COLUMNS CSV (read in the same snapshot),
    which spares DuckDB a second pass over the totals.
    ``adbc`` (``tables``): DuckDB tables ``DB_KEYDAYS_TABLE`` (TOTALS_COLUMNS, metric sums
    NULL where no row recorded the metric) and ``DB_STATS_TABLE`` (``db_stats_sql``) in
    the comparison's own database; no files.
    ``keyed``: the key-day table holds the five key cells joined in one text ``k``
    (formats.joined_key_sql), which view ``d`` splits again.
    ``slim``: the key-day table holds no key text at all; the loader matched its twins
    against the export's (``TwinExchange``) and left ``D_TWINS_TABLE`` (every compared
    key-day's twin) and ``D_CAND_TABLE`` (the key-days without one, with their cells).
    ``fallback``: why the preferred reader was not used (for the report), or None.
    """

    totals: tuple[Path, ...]
    stats: Path | None = None
    reader: str = "copy-csv"
    tables: bool = False
    fallback: str | None = None
    keyed: bool = False
    slim: bool = False


DB_STATS_COLUMNS: tuple[str, ...] = ("day", "aligned", "has_ids", "records", *METRICS)


# writes the database's daily totals for [first_day, last_day] as headerless TOTALS_COLUMNS
# CSV rows to the given path; returns what it wrote (None: just that path)
DbTotalsWriter = Callable[[date, date, Path], DbTotalsFiles | None]


# for the given days and metrics: per day, the metrics that are NULL in every usage_events
# row of that day that parity compares (aligned windows, with ids); asked only about
# metrics whose DB day total is 0 while the export's is not (usage_totals.unrecorded_probe)
UnrecordedProbe = Callable[[Sequence[date], Sequence[str]], Mapping[date, frozenset[str]]]


DB_KEYDAYS_TABLE, DB_STATS_TABLE = "db_keydays", "db_stats"
# the export's twins (offered through TwinExchange), the database's, its unmatched key-days
E_TWINS_TABLE, D_TWINS_TABLE, D_CAND_TABLE = "e_twins", "d_twins", "d_cand"


class TwinExchange:
    """The export's key-day twins, handed from the main thread to the database stage.

    A loader that reads the rows without their key text (usage_arrow's slim read) waits
    here, after its read, for table ``E_TWINS_TABLE`` (one twin hash per export key-day:
    formats.twin_hash_sql over the compared metrics), to learn which key-days it must fetch
    again with their key. The main thread offers it once the exports are read, or withdraws
    on any error, so the wait always ends.
    """

    def __init__(self) -> None:
        self._done = threading.Event()
        self._metrics: tuple[str, ...] | None = None

    def offer(self, metrics: Sequence[str]) -> None:
        """Table E_TWINS_TABLE exists, hashed over ``metrics``."""
        self._metrics = tuple(metrics)
        self._done.set()

    def withdraw(self) -> None:
        """No twins will come (the export side failed); a no-op once offered."""
        self._done.set()

    def wait(self) -> tuple[str, ...] | None:
        """The compared metrics once the twins are offered; None when withdrawn."""
        self._done.wait()
        return self._metrics


class DbLoader(ABC):
    """A database side that loads its key-days straight into the comparison's DuckDB.

    ``load`` runs in the database thread with its own DuckDB cursor (a connection to the
    same in-memory database, under the same memory limit) and returns what it delivered:
    the tables (``DbTotalsFiles(tables=True)``) or, when it fell back, CSV files at ``out``.
    ``twins``: where the export's twins will be offered, when the caller offers them.
    """

    @abstractmethod
    def load(
        self,
        first_day: date,
        last_day: date,
        out: Path,
        duck: Any,
        twins: TwinExchange | None = None,
    ) -> DbTotalsFiles: ...


def db_stats_sql(
    keydays: str = DB_KEYDAYS_TABLE,
    has_ids: str = HAS_IDS_SQL,
    records: str = "coalesce(sum(record_count), 0)",
) -> str:
    """Per (day, aligned, has ids) over a key-day table: rows, metric sums (NULL as 0),
    ``recorded_<metric>`` (key-days where some row recorded the metric: 0 means NULL in
    every row, which a sum of 0 cannot tell apart) and ``key_days``. ``has_ids``: the
    expression, or the column of a keyed table (usage_arrow's packed read)."""
    sums = ", ".join(f'coalesce(sum("{m}"), 0)::BIGINT AS "{m}"' for m in METRICS)
    recorded = ", ".join(f'count("{m}") AS "recorded_{m}"' for m in METRICS)
    return (
        f"SELECT day, aligned, {has_ids} AS has_ids, "
        f"{records}::BIGINT AS records, {sums}, {recorded}, "
        f"count(*) AS key_days FROM {keydays} GROUP BY ALL"
    )


def stats_csv_reader(path: Path) -> str:
    """DB_STATS_COLUMNS rows (headerless CSV): the database's own per-day sums."""
    types = {"day": "DATE", "aligned": "INTEGER", "has_ids": "INTEGER"}
    columns = ", ".join(f"'{c}': '{types.get(c, 'BIGINT')}'" for c in DB_STATS_COLUMNS)
    sums = ", ".join(f'coalesce("{c}", 0)' for c in DB_STATS_COLUMNS[3:])
    return (
        f"(SELECT day, aligned <> 0, has_ids <> 0, {sums} FROM read_csv('{sql_path(path)}', "
        f"columns={{{columns}}}, header=false, auto_detect=false, delim=',', quote='\"', "
        f"escape='\"'))"
    )


def totals_csv_reader(paths: Sequence[Path]) -> str:
    """TOTALS_COLUMNS rows from headerless CSV files (the database side, or a JSON export's).

    Empty text cells are '' and empty counts 0: the database side writes a zero sum as an
    empty cell (cheaper for the server to format).
    """
    types = {"day": "DATE", "batch": "INTEGER", "aligned": "INTEGER"}
    columns = ", ".join(
        f"'{c}': '{types.get(c, 'BIGINT' if c in ('record_count', *METRICS) else 'VARCHAR')}'"
        for c in TOTALS_COLUMNS
    )
    files = "[" + ", ".join(f"'{sql_path(p)}'" for p in paths) + "]"
    text = ", ".join(f'coalesce("{c}", \'\') AS "{c}"' for c in KEY_TEXT_COLUMNS)
    counts = ", ".join(f'coalesce("{c}", 0) AS "{c}"' for c in ("record_count", *METRICS))
    return (
        f"SELECT day, {text}, batch <> 0 AS batch, aligned <> 0 AS aligned, {counts} "
        f"FROM read_csv({files}, columns={{{columns}}}, header=false, auto_detect=false, "
        f"delim=',', quote='\"', escape='\"', allow_quoted_nulls=false)"
    )


def db_views(con: Any, files: DbTotalsFiles) -> None:
    """Views for the join: ``e_join`` (export key-days) and ``d`` (database key-days). A
    keyed table also gets ``d_keyed``: ``d`` with the joined key ``k`` in place of the five
    cells, which the comparison hashes and filters before it splits the few rows it keeps
    (``keyday_cells_sql``)."""
    has_ids = HAS_IDS_SQL
    if files.slim:  # only the unmatched key-days have their cells: the join needs no more
        con.execute("CREATE TEMP VIEW e_join AS SELECT * FROM e")
        con.execute(f"CREATE TEMP VIEW d AS SELECT * FROM {D_CAND_TABLE}")
        return
    if files.tables:  # loaded by a DbLoader; NULL sums read as 0, as the CSV reader does
        cols = [
            f'coalesce("{c}", 0) AS "{c}"' if c in METRICS else f'"{c}"' for c in TOTALS_COLUMNS
        ]
        if files.keyed:
            keyed = [c for c in cols if c.strip('"') not in KEY_TEXT_COLUMNS]
            con.execute(
                f"CREATE TEMP VIEW d_keyed AS SELECT k, kh, {', '.join(keyed)} "
                f"FROM {DB_KEYDAYS_TABLE} WHERE aligned AND has_ids"
            )
            con.execute(f"CREATE TEMP VIEW d AS {keyday_cells_sql('d_keyed')}")
            con.execute("CREATE TEMP VIEW e_join AS SELECT * FROM e")
            return
        con.execute(
            f"CREATE TEMP VIEW db_daily AS SELECT {', '.join(cols)} FROM {DB_KEYDAYS_TABLE}"
        )
    else:
        con.execute(f"CREATE TEMP VIEW db_daily AS {totals_csv_reader(files.totals)}")
    con.execute("CREATE TEMP VIEW e_join AS SELECT * FROM e")
    # PostgreSQL grouped by key-day and alignment: the aligned rows are one per key-day
    con.execute(f"CREATE TEMP VIEW d AS SELECT * FROM db_daily WHERE aligned AND {has_ids}")


def keyday_cells_sql(source: str) -> str:
    """``source``'s keyed rows (``d_keyed``'s layout) in TOTALS_COLUMNS, the key split."""
    cols = [split_key_sql("k") if c == KEY_TEXT_COLUMNS[0] else f'"{c}"' for c in TOTALS_COLUMNS]
    cols = [c for c in cols if c.strip('"') not in KEY_TEXT_COLUMNS[1:]]
    return f"SELECT {', '.join(cols)} FROM {source}"


def tables_unrecorded_probe(con: Any) -> UnrecordedProbe:
    """An UnrecordedProbe answered from a DbLoader's stats table (``recorded_<metric>``):
    per asked day, the metrics no compared key-day (aligned, with ids) recorded in any row,
    as usage_totals.unrecorded_metrics answers it from usage_events."""

    def probe(days: Sequence[date], metrics: Sequence[str]) -> dict[date, frozenset[str]]:
        if not days or not metrics:
            return {}
        recorded = ", ".join(f'sum("recorded_{m}")' for m in metrics)
        listed = ", ".join(f"DATE '{d.isoformat()}'" for d in days)
        rows = con.execute(
            f"SELECT day, sum(key_days), {recorded} FROM {DB_STATS_TABLE} "
            f"WHERE aligned AND has_ids AND day IN ({listed}) GROUP BY day"
        ).fetchall()
        return {
            day: frozenset(m for m, n in zip(metrics, counts, strict=True) if n == 0)
            for day, total, *counts in rows
            if total
        }

    return probe
