"""``reconcile``: one parity request walked down the data's path, once.

The export side (export_side: the files as the preflight staged them, or read now), the
database side (db_side, in a thread: PostgreSQL groups and streams its totals while DuckDB
reads the export), the comparison (compare: one full outer join on key x day keeps only
the offenders), the judging rule (rules). Each step hands the next what it made; none
calls back. Neither side is ever held in Python.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from cron_dryrun.parity.compare import compare_sides, day_result, days_between, write_detail
from cron_dryrun.parity.db_side import (
    DbLoader,
    DbThread,
    DbTotalsFiles,
    DbTotalsWriter,
    UnrecordedProbe,
    db_views,
    read_db,
)
from cron_dryrun.parity.export_side import ExportSide, ExportStage, export_view, read_exports
from cron_dryrun.parity.formats import expand_export_paths, export_file_message
from cron_dryrun.parity.readers import day_coverage
from cron_dryrun.parity.rules import DiffResult, Policy, Progress
from cron_dryrun.parity.staging import connect


def reconcile(
    exports: Sequence[Path],
    db_totals: DbTotalsWriter | DbLoader,
    *,
    first_day: date | None = None,
    last_day: date | None = None,
    open_from: date | None = None,
    policy: Policy | None = None,
    detail_path: Path | None = None,
    progress: Progress | None = None,
    now: datetime | None = None,
    unrecorded_probe: UnrecordedProbe | None = None,
    stage: ExportStage | None = None,
) -> DiffResult:
    """Compare the exports with the database's daily totals over [first_day, last_day].

    Without a range, the export's days are used. ``open_from``: that day and later are
    still open (the run's current day) and are reported, not judged. ``unrecorded_probe``:
    asked, only when a judged day's DB total of a metric is 0 while the export's is not,
    whether that metric is NULL in every DB row of the day (then it is reported as not
    recorded by ingestion, and not judged on that day). ``stage``: the exports as the
    preflight staged them (compared on its connection; the caller closes it).

    The request walks down the data's path: the export side (export_side, staging), the
    database side (db_side, in a thread: PostgreSQL groups and streams its totals while
    DuckDB reads the export), the comparison (compare: one full outer join on key x day
    keeps only the offenders), the judging rule (rules). Neither side is held in Python.
    """
    policy = policy or Policy()
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    files = expand_export_paths(exports)
    if not files:
        raise ValueError("no export files given (or the folders hold no .csv/.tsv/.json files)")
    with tempfile.TemporaryDirectory(prefix="cron-dryrun-diff-") as tmp:
        work = Path(tmp)
        db_csv = work / "db_totals.csv"
        con = stage.con if stage is not None else connect(tmp)
        db_thread: DbThread | None = None
        if first_day is not None and last_day is not None:
            # the database groups while DuckDB reads the export: two cores, both busy.
            # Started after DuckDB's import: the writer may first import the PostgreSQL
            # driver (GIL-bound), which then overlaps DuckDB's read (GIL released)
            db_thread = DbThread(db_totals, first_day, last_day, db_csv, con.cursor())
            db_thread.start()
        try:
            side = read_exports(con, files, first_day, last_day, say, stage)
            coverage = day_coverage(b for spans in side.buckets.values() for b in spans)
            first_day, last_day = _range(first_day, last_day, coverage, side)
            export_view(con, side.sources, first_day, last_day)
            if db_thread is None:
                say("querying the database")
                db_files = read_db(db_totals, first_day, last_day, db_csv, con)
            else:
                say("waiting for the database")
                db_thread.join()
                if db_thread.error is not None:
                    raise db_thread.error
                db_files = db_thread.files or DbTotalsFiles((db_csv,))
            say("comparing")
            db_views(con, db_files)
            days = [
                day_result(day, coverage.get(day, 0), open_from)
                for day in days_between(first_day, last_day)
            ]
            result = compare_sides(
                con, policy, side.metrics, days, files, side.rollup, first_day, last_day,
                open_from, db_files, unrecorded_probe,
            )  # fmt: skip
            result.db_reader, result.db_reader_fallback = db_files.reader, db_files.fallback
            if detail_path is not None:
                say("writing the detail file")
                result.detail_path = detail_path
                result.detail_lines = write_detail(con, detail_path, side.metrics, side.rollup)
        finally:
            if stage is None:
                con.close()
    result.generated_at = now or datetime.now(UTC)
    result.elapsed_seconds = time.perf_counter() - started
    return result


def _range(
    first_day: date | None, last_day: date | None, coverage: Mapping[date, int], side: ExportSide
) -> tuple[date, date]:
    """The range compared: as given, else the days the export covers."""
    if first_day is not None and last_day is not None:
        return first_day, last_day
    known = sorted(coverage)
    if not known:
        unreadable = [export_file_message(p) for p in side.rollup.problems if p.kind == "file"]
        raise ValueError(
            "; ".join([*unreadable, "the export holds no readable bucket: nothing to compare"])
        )
    return first_day or known[0], last_day or known[-1]
