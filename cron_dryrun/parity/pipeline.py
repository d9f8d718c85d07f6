"""``reconcile``: one parity request walked down the data's path, once.

The orchestrator: it hands the request to each stage in turn and each stage hands back
what it made: the database-reading stage (db_stage, started in a thread first: PostgreSQL
streams its rows while DuckDB reads the export; a loader then waits for the export's
twins, which the export side offers, to fetch only the unmatched keys), the export-staging stage
(export_side: the files as the preflight staged them, or read now; the range, view ``e``),
the comparing stage (compare: one full outer join on key x day keeps only the offenders,
the judging rule's SQL), which hands back the result. No stage calls back up or into
another stage (tests/test_parity_walk.py measures it); neither side is held in Python.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from cron_dryrun.parity.compare import compare
from cron_dryrun.parity.db_side import DbLoader, DbTotalsFiles, DbTotalsWriter, UnrecordedProbe
from cron_dryrun.parity.db_stage import DbThread, read_db
from cron_dryrun.parity.duck import connect
from cron_dryrun.parity.export_side import ExportStage, read_exports
from cron_dryrun.parity.formats import expand_export_paths
from cron_dryrun.parity.rules import DiffResult, Policy, Progress, quiet


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

    The request walks down the data's path (the module docstring); the judging rule
    (rules.judge) and the report are the caller's (engine).
    """
    policy = policy or Policy()
    started = time.perf_counter()
    say = progress or quiet
    files = expand_export_paths(exports)
    if not files:
        raise ValueError("no export files given (or the folders hold no .csv/.tsv/.json files)")
    with tempfile.TemporaryDirectory(prefix="cron-dryrun-diff-") as tmp:
        db_csv = Path(tmp) / "db_totals.csv"
        con = stage.con if stage is not None else connect(tmp)
        db_thread: DbThread | None = None
        if first_day is not None and last_day is not None:
            # the database groups while DuckDB reads the export: two cores, both busy.
            # Started after DuckDB's import: the writer may first import the PostgreSQL
            # driver (GIL-bound), which then overlaps DuckDB's read (GIL released). A loader
            # reads the rows without their key text and waits for the export's twins
            # (db_side.TwinExchange), which the export side offers once it is read
            db_thread = DbThread(db_totals, first_day, last_day, db_csv, con.cursor())
            db_thread.start()
        try:
            twins = db_thread.twins if db_thread is not None else None
            side = read_exports(con, files, first_day, last_day, say, stage, twins)
            assert side.first_day is not None and side.last_day is not None
            if db_thread is None:  # the range came from the export: read the database now
                say("querying the database")
                db_files = read_db(db_totals, side.first_day, side.last_day, db_csv, con)
            else:
                say("waiting for the database")
                db_thread.join()
                if db_thread.error is not None:
                    raise db_thread.error
                db_files = db_thread.files or DbTotalsFiles((db_csv,))
            result = compare(
                con, side, db_files, files, policy, open_from, unrecorded_probe, detail_path, say
            )
        finally:
            if stage is None:
                con.close()
    result.generated_at = now or datetime.now(UTC)
    result.elapsed_seconds = time.perf_counter() - started
    return result
