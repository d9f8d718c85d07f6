"""The run's exports, read once: every file staged, then its counts and key-days for a range.

``stage_for_run`` is what the preflight calls before anything is sent: it stages every
export (staging.stage_file: a CSV/TSV whole, gzip read to its end, in one typed pass; JSON
pages through the reference reader, once) in an ``ExportStage`` the process keeps (in
duck, which the engine claims it from), and says which file is damaged. ``read_exports``
is the export-staging stage of parity's request: it takes each file's range from that
stage when the file is unchanged since, else stages it now, and hands back the export
side whole: one SELECT of key-day rows per file, the counts of everything not compared,
the buckets and overlaps, the range compared, its coverage and view ``e``. It calls
nothing above it (tests/test_parity_walk.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cron_dryrun.parity.db_side import E_TWINS_TABLE, TwinExchange
from cron_dryrun.parity.duck import StageDatabase, keep_stage, kept_stage
from cron_dryrun.parity.duck import claim_stage as claim_stage  # where the tests find it
from cron_dryrun.parity.export_sql import totals_table_ddl
from cron_dryrun.parity.formats import (
    KEY_TEXT_COLUMNS,
    METRICS,
    DayKey,
    ExportProblem,
    export_file_message,
    sniff_export,
    twin_hash_sql,
)
from cron_dryrun.parity.readers import (
    DailyRollup,
    SharedKeyDays,
    common_metrics,
    day_coverage,
    overlap_problem,
    time_overlaps,
)
from cron_dryrun.parity.staging import StagedFile, stage_file, take


@dataclass
class ExportSide:
    """What the exports say for a range: per file a SELECT of TOTALS_COLUMNS key-day rows
    (``source_of``), the counts of every row (totals only from JSON pages) and problems in
    ``rollup``, each file's buckets, and the metrics every readable file carries."""

    sources: list[str] = field(default_factory=list)
    source_of: dict[str, str] = field(default_factory=dict)
    rollup: DailyRollup = field(default_factory=DailyRollup)
    buckets: dict[str, set[tuple[datetime, datetime]]] = field(default_factory=dict)
    metric_sets: list[set[str]] = field(default_factory=list)
    # set once every file is read: the metrics every readable file carries, the seconds
    # of each UTC day the buckets cover, and the range compared (as asked, else the days
    # the export covers); view ``e`` then holds the export's key-days in that range
    metrics: tuple[str, ...] = ()
    coverage: dict[date, int] = field(default_factory=dict)
    first_day: date | None = None
    last_day: date | None = None


def _file_key(path: Path) -> tuple[str, int, int, int]:
    """A file as staged: its path and what changes when its bytes do."""
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


class ExportStage:
    """Exports staged in a DuckDB database of their own, kept for the run's parity check.

    It owns the connection and its spill folder; whoever claims it (``claim_stage``)
    compares on that connection and closes it.
    """

    def __init__(self) -> None:
        self.db = StageDatabase()
        self.con: Any = self.db.con
        self.files: dict[str, tuple[tuple[str, int, int, int], StagedFile]] = {}
        self._staged = 0  # tables made so far: each file's name is new

    def stage(self, path: Path) -> StagedFile:
        """Stage ``path`` (a CSV/TSV export) unless it is staged and unchanged."""
        key = _file_key(path)
        known = self.files.get(str(path))
        if known is not None and known[0] == key:
            return known[1]
        if known is not None:
            known[1].drop(self.con)
        self._staged += 1
        staged = stage_file(self.con, path, f"export_staged_{self._staged}")
        self.files[str(path)] = (key, staged)
        return staged

    def staged(self, path: Path) -> StagedFile | None:
        """The staged file, when ``path`` is unchanged since it was staged."""
        known = self.files.get(str(path))
        try:
            fresh = known is not None and known[0] == _file_key(path)
        except OSError:
            fresh = False
        return known[1] if fresh and known is not None else None

    def close(self) -> None:
        self.db.close()


def stage_for_run(paths: Sequence[Path]) -> dict[Path, StagedFile]:
    """Stage every CSV/TSV export of the run (the preflight), for parity to use later
    (kept in duck, which parity claims it from: ``claim_stage``)."""
    stage = kept_stage()
    if stage is None:
        stage = ExportStage()
        keep_stage(stage)
    out = {}
    for path in paths:
        fmt = sniff_export(path)
        if fmt.problem(str(path)) is None:
            out[path] = stage.stage(path)
    return out


def read_exports(
    con: Any,
    files: Sequence[Path],
    first_day: date | None,
    last_day: date | None,
    say: Callable[[str], None],
    stage: ExportStage | None = None,
    twins: TwinExchange | None = None,
) -> ExportSide:
    """Every export file's range: from the stage when staged and unchanged, else read now;
    then the range compared and view ``e`` over it (``export_view``). ``twins``: where the
    database stage waits for the export's twins (``export_twins``): offered at the end,
    withdrawn on any error."""
    try:
        side = _read_exports(con, files, first_day, last_day, say, stage)
        if twins is not None:
            export_twins(con, side.metrics)
            twins.offer(side.metrics)
        return side
    finally:
        if twins is not None:
            twins.withdraw()  # a no-op once offered: else the database stage stops waiting


def _read_exports(
    con: Any,
    files: Sequence[Path],
    first_day: date | None,
    last_day: date | None,
    say: Callable[[str], None],
    stage: ExportStage | None,
) -> ExportSide:
    side = ExportSide()
    for i, path in enumerate(files, 1):
        say(f"reading export {i}/{len(files)}: {path.name}")
        fmt = sniff_export(path)
        if fmt.problem(str(path)) is None:  # a file that is not read decides nothing
            side.metric_sets.append(set(fmt.metrics))
        staged = stage.staged(path) if stage is not None else None
        if staged is None:
            staged = stage_file(con, path, f"export_read_{i}", fmt)
        part = take(con, staged, first_day, last_day)
        load = part.load
        if part.relation is not None:
            side.sources.append(part.relation)
            side.source_of[str(path)] = part.relation
        merge_counts(
            side.rollup, load.rows, load.empty_bucket_rows, load.rows_without_ids,
            load.rows_outside_range, load.without_ids_totals, load.problems, load.problem_count,
        )  # fmt: skip
        side.buckets[str(path)] = load.buckets
    shared = shared_key_days(con, side.source_of)
    for overlap in time_overlaps(side.buckets):
        problem = overlap_problem(
            overlap, *shared(overlap.first_file, overlap.second_file, overlap.days)
        )
        if problem is not None:
            side.rollup.add_problem(problem)
    side.metrics = common_metrics(side.metric_sets)
    side.coverage = day_coverage([b for spans in side.buckets.values() for b in spans])
    side.first_day, side.last_day = _range(first_day, last_day, side)
    export_view(con, side.sources, side.first_day, side.last_day)
    return side


def _range(first_day: date | None, last_day: date | None, side: ExportSide) -> tuple[date, date]:
    """The range compared: as given, else the days the export covers."""
    if first_day is not None and last_day is not None:
        return first_day, last_day
    known = sorted(side.coverage)
    if not known:
        unreadable = [export_file_message(p) for p in side.rollup.problems if p.kind == "file"]
        raise ValueError(
            "; ".join([*unreadable, "the export holds no readable bucket: nothing to compare"])
        )
    return first_day or known[0], last_day or known[-1]


def merge_counts(
    rollup: DailyRollup,
    rows: int,
    empties: int,
    no_ids: int,
    outside: int,
    no_id_totals: Sequence[int],
    problems: Sequence[ExportProblem],
    problem_count: int,
) -> None:
    rollup.rows += rows
    rollup.empty_bucket_rows += empties
    rollup.rows_without_ids += no_ids
    rollup.rows_outside_range += outside
    rollup.without_ids_totals = [
        a + b for a, b in zip(rollup.without_ids_totals, no_id_totals, strict=True)
    ]
    for problem in problems:
        rollup.add_problem(problem)
    rollup.problem_count += problem_count - len(problems)


def shared_key_days(con: Any, source_of: Mapping[str, str]) -> SharedKeyDays:
    """How many key-days two files' rows share on the given days (DuckDB), and the first."""
    keys = ("day", *KEY_TEXT_COLUMNS, "batch")

    def shared(first: str, second: str, days: frozenset[date]) -> tuple[int, DayKey | None]:
        a, b = source_of.get(first), source_of.get(second)
        if a is None or b is None or not days:
            return 0, None
        listed = ", ".join(f"DATE '{d.isoformat()}'" for d in sorted(days))
        cols = ", ".join(f'"{k}"' for k in keys)
        both = (
            f"SELECT DISTINCT {cols} FROM ({a}) WHERE day IN ({listed}) "
            f"INTERSECT SELECT DISTINCT {cols} FROM ({b}) WHERE day IN ({listed})"
        )
        row = con.execute(
            f"SELECT count(*) OVER (), * FROM ({both}) ORDER BY {cols} LIMIT 1"
        ).fetchone()
        if row is None:
            return 0, None
        return int(row[0]), DayKey(*row[1:])

    return shared


def export_view(con: Any, sources: Sequence[str], first_day: date, last_day: date) -> None:
    """View ``e``: the export's key-day rows in [first_day, last_day], one per key-day."""
    ranged = f"day BETWEEN DATE '{first_day.isoformat()}' AND DATE '{last_day.isoformat()}'"
    if len(sources) == 1:  # one file is already one row per key-day: nothing to group
        con.execute(f"CREATE TEMP VIEW e AS SELECT * FROM ({sources[0]}) WHERE {ranged}")
        return
    con.execute(totals_table_ddl("e", key_hash=True))
    if sources:
        # several files may carry the same key-day: add them up (overlaps are reported)
        keys = ", ".join(f'"{k}"' for k in ("day", *KEY_TEXT_COLUMNS, "batch"))
        sums = ", ".join(f'sum("{m}")::BIGINT' for m in ("record_count", *METRICS))
        union = " UNION ALL ".join(f"SELECT * FROM ({src})" for src in sources)
        con.execute(
            f"INSERT INTO e SELECT {keys}, true, {sums}, kh FROM ({union}) WHERE {ranged} "
            "GROUP BY ALL"
        )


def export_twins(con: Any, metrics: Sequence[str]) -> None:
    """Table db_side.E_TWINS_TABLE: one twin hash per export key-day of view ``e``
    (formats.twin_hash_sql over ``metrics``), for the database stage to match its own
    against (db_side.TwinExchange). A table, not a view: the database stage reads it on a
    connection of its own."""
    con.execute(f"DROP TABLE IF EXISTS {E_TWINS_TABLE}")
    con.execute(f"CREATE TABLE {E_TWINS_TABLE} AS SELECT {twin_hash_sql(metrics)} AS h FROM e")
