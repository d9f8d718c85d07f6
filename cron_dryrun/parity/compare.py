"""The comparison: the export's key-days against the database's, in DuckDB.

Most key-days agree exactly: one hash of key and compared metrics per key-day, matched
across the sides on that one integer, sets them aside (``_candidates``); one full outer
join on key x day of the rest keeps only the offenders; per-day totals, renamed
models, the worst offenders and the detail file are read from that. The rule itself is
rules' (``sql_fails_any`` is ``metric_findings`` in SQL).
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cron_dryrun.parity.db_side import (
    D_TWINS_TABLE,
    DB_STATS_TABLE,
    DbTotalsFiles,
    UnrecordedProbe,
    db_views,
    keyday_cells_sql,
    stats_csv_reader,
    tables_unrecorded_probe,
)
from cron_dryrun.parity.formats import (
    HAS_IDS_SQL,
    KEY_TEXT_COLUMNS,
    METRICS,
    SECONDS_PER_DAY,
    DayKey,
    sql_path,
    twin_hash_sql,
)
from cron_dryrun.parity.readers import DailyRollup
from cron_dryrun.parity.rules import (
    OFFENDER_KINDS,
    DayResult,
    DiffResult,
    Finding,
    Offender,
    Policy,
    Progress,
    Rename,
    metric_findings,
    sql_fails_any,
)

if TYPE_CHECKING:
    from cron_dryrun.parity.export_side import ExportSide


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def day_result(day: date, covered: int, open_from: date | None) -> DayResult:
    if open_from is not None and day >= open_from:
        reason: str | None = f"still open: the run's current day (from {open_from.isoformat()})"
    elif covered < SECONDS_PER_DAY:
        reason = f"export covers {covered} of {SECONDS_PER_DAY} s of this day"
    else:
        reason = None
    return DayResult(day, reason is None, reason, covered)


def compare(
    con: Any,
    side: ExportSide,
    db_files: DbTotalsFiles,
    files: Sequence[Path],
    policy: Policy,
    open_from: date | None,
    unrecorded_probe: UnrecordedProbe | None,
    detail_path: Path | None,
    say: Progress,
) -> DiffResult:
    """The comparing stage, whole: the export side (view ``e``, its range, coverage and
    metrics) against the database side (``db_files``), judged per day under ``policy``;
    every offender written to ``detail_path`` when given."""
    assert side.first_day is not None and side.last_day is not None  # read_exports set them
    say("comparing")
    db_views(con, db_files)
    days = [
        day_result(day, side.coverage.get(day, 0), open_from)
        for day in days_between(side.first_day, side.last_day)
    ]
    result = compare_sides(
        con, policy, side.metrics, days, list(files), side.rollup, side.first_day,
        side.last_day, open_from, db_files, unrecorded_probe,
    )  # fmt: skip
    result.db_reader, result.db_reader_fallback = db_files.reader, db_files.fallback
    if detail_path is not None:
        say("writing the detail file")
        result.detail_path = detail_path
        result.detail_lines = write_detail(con, detail_path, side.metrics, side.rollup)
    return result


@dataclass
class DbDays:
    """The database side's counts outside the join, from its per-day stats."""

    rows: int = 0
    no_ids: int = 0
    unaligned: int = 0
    key_days: int = 0
    key_days_known: bool = True  # else: derived from the join (export key-days +- offenders)
    no_id_sums: list[int] = field(default_factory=lambda: [0] * len(METRICS))


def compare_sides(
    con: Any,
    policy: Policy,
    metrics: tuple[str, ...],
    days: list[DayResult],
    files: list[Path],
    rollup: DailyRollup,
    first_day: date,
    last_day: date,
    open_from: date | None,
    db_files: DbTotalsFiles | None = None,
    unrecorded_probe: UnrecordedProbe | None = None,
) -> DiffResult:
    """Join view ``e`` (the export's key-days) with ``d`` (the database's) into table
    ``offenders``, fill ``days`` with both sides' totals and key-day counts, judge under
    ``policy`` and sample the worst offenders."""
    by_day = {d.day: d for d in days}
    db_files = db_files or DbTotalsFiles(())
    if db_files.tables:  # NULL-ness is in the tables (same snapshot): no second query
        unrecorded_probe = tables_unrecorded_probe(con)
    db = _db_days(con, db_files, by_day)
    export_key_days = 0
    side_sums = ", ".join(f'coalesce(sum("{m}"), 0)' for m in METRICS)
    for day, n, *values in con.execute(
        f"SELECT day, count(*), {side_sums} FROM e GROUP BY day"
    ).fetchall():
        export_key_days += n
        result_day = by_day.get(day)
        if result_day is None:
            continue
        result_day.export.update(zip(METRICS, (int(v) for v in values), strict=True))
        result_day.key_days["matched"] += n  # corrected by the offenders below
    unrecorded = _unrecorded(days, metrics, unrecorded_probe)
    judged_days = [d.day for d in days if d.judged]
    _offenders_table(
        con, metrics, policy, unrecorded, judged_days, export_key_days, db_files.keyed,
        db_files.slim,
    )  # fmt: skip
    for day, status, n in con.execute(
        "SELECT day, status, count(*) FROM offenders GROUP BY ALL"
    ).fetchall():
        result_day = by_day.get(day)
        if result_day is not None:
            result_day.key_days[status] += n
            if status != "missingInCsv":  # an export key-day that did not match
                result_day.key_days["matched"] -= n
    if not db.key_days_known:  # every DB key-day either matched one of the export's or not
        (db.key_days,) = con.execute(
            "SELECT ? - count(*) FILTER (WHERE status = 'missingInDb') "
            "+ count(*) FILTER (WHERE status = 'missingInCsv') FROM offenders",
            [export_key_days],
        ).fetchone()
    renames = _renames(con, metrics, policy.threshold, unrecorded)
    offenders = {kind: _sample(con, kind, metrics, policy, unrecorded) for kind in OFFENDER_KINDS}
    return DiffResult(
        policy=policy,
        first_day=first_day,
        last_day=last_day,
        open_from=open_from,
        files=[str(f) for f in files],
        metrics_compared=metrics,
        days=days,
        counts=_counts(con, days, rollup, db, export_key_days),
        offenders=offenders,
        problems=list(rollup.problems[: policy.sample_size]),
        without_ids={
            "export": dict(zip(METRICS, rollup.without_ids_totals, strict=True)),
            "db": dict(zip(METRICS, db.no_id_sums, strict=True)),
        },
        generated_at=datetime.now(UTC),
        unrecorded=unrecorded,
        renames=renames,
    )


def _db_days(con: Any, db_files: DbTotalsFiles, by_day: Mapping[date, DayResult]) -> DbDays:
    """Rows, rows without ids, unaligned rows and key-days of the database side, and its
    per-day totals added to ``by_day``, from whichever stats the reader delivered."""
    side_sums = ", ".join(f'coalesce(sum("{m}"), 0)' for m in METRICS)
    db = DbDays()
    if db_files.tables:  # the loader summed them per key-day group, counting key-days
        metric_cols = ", ".join(f'"{m}"' for m in METRICS)
        stats_sql = (
            f"SELECT day, aligned, has_ids, records, {metric_cols}, key_days FROM {DB_STATS_TABLE}"
        )
    elif db_files.stats is not None:  # the database summed them in the same snapshot
        stats_sql = f"SELECT * FROM {stats_csv_reader(db_files.stats)}"
        db.key_days_known = False
    else:  # one pass over the totals files: everything but the join
        stats_sql = (
            f"SELECT day, aligned, {HAS_IDS_SQL}, coalesce(sum(record_count), 0), {side_sums}, "
            f"count(*) FROM db_daily GROUP BY ALL"
        )
    for day, aligned, ids, records, *values in con.execute(stats_sql).fetchall():
        groups = values.pop() if db.key_days_known else 0
        db.rows += int(records)
        if not aligned:
            db.unaligned += int(records)
        elif not ids:
            db.no_ids += int(records)
            db.no_id_sums = [a + int(b) for a, b in zip(db.no_id_sums, values, strict=True)]
        else:
            db.key_days += int(groups)
            result_day = by_day.get(day)
            if result_day is not None:
                for metric, value in zip(METRICS, values, strict=True):
                    result_day.db[metric] += int(value)
    return db


def _offenders_table(
    con: Any,
    metrics: tuple[str, ...],
    policy: Policy,
    unrecorded: Mapping[date, Sequence[str]],
    judged_days: Sequence[date],
    export_key_days: int = 0,
    keyed: bool = False,
    slim: bool = False,
) -> None:
    """Table ``offenders``: the key-days on one side only or out of policy, with both
    sides' metrics, whether the day is judged and how bad it is (``worst``). ``keyed``:
    view ``d`` carries the joined key ``k`` (db_side.DbTotalsFiles.keyed)."""
    keys = ("day", *KEY_TEXT_COLUMNS, "batch")
    judged_sql = (
        "day IN (" + ", ".join(f"DATE '{d.isoformat()}'" for d in judged_days) + ")"
        if judged_days
        else "false"
    )
    fails = sql_fails_any(metrics, policy.threshold, unrecorded)
    worst = (
        "greatest("
        + ", ".join(
            f'abs(CAST(coalesce("d_{m}", 0) - coalesce("e_{m}", 0) AS DOUBLE) '
            f'/ greatest(coalesce("e_{m}", 0), 1))'
            for m in metrics
        )
        + ")"
        if metrics
        else "0.0"
    )
    on = " AND ".join(f'e."{k}" = d."{k}"' for k in keys)
    picked = ", ".join(f'coalesce(e."{k}", d."{k}") AS "{k}"' for k in keys)
    sides = ", ".join(f'e."{m}" AS "e_{m}", d."{m}" AS "d_{m}"' for m in METRICS)
    # most key-days agree exactly: integer comparisons on the join's own columns drop them
    # before anything is computed per row; the rule then runs on what is left
    differs = (
        "e.record_count IS NULL OR d.record_count IS NULL OR NOT ("
        + (" AND ".join(f'e."{m}" = d."{m}"' for m in metrics) or "false")
        + ")"
    )
    narrowed = slim or export_key_days >= TWIN_FILTER_MIN_KEY_DAYS
    if slim:  # the database stage matched the twins and kept d_cand (db_side.TwinExchange)
        con.execute(
            f"CREATE TEMP TABLE e_cand AS SELECT * FROM e_join WHERE {twin_hash_sql(metrics)} "
            f"NOT IN (SELECT h FROM {D_TWINS_TABLE})"
        )
    elif narrowed:
        _candidates(con, metrics, keyed)
    else:  # a small join fits in memory: the hashes would cost more than they save
        con.execute("CREATE TEMP VIEW e_cand AS SELECT * FROM e_join")
        con.execute("CREATE TEMP VIEW d_cand AS SELECT * FROM d")
    con.execute(
        f"CREATE TEMP TABLE offenders AS SELECT *, {judged_sql} AS judged, "
        f"CASE WHEN status = 'mismatched' THEN {worst} "
        f"ELSE CAST(coalesce(e_input_tokens, d_input_tokens, 0) + coalesce(e_output_tokens, "
        f"d_output_tokens, 0) AS DOUBLE) END AS worst FROM (SELECT *, CASE WHEN e_n IS NULL "
        f"THEN 'missingInCsv' WHEN d_n IS NULL THEN 'missingInDb' WHEN {fails} "
        f"THEN 'mismatched' ELSE 'matched' END AS status FROM (SELECT {picked}, "
        f"e.record_count AS e_n, d.record_count AS d_n, {sides} FROM e_cand e FULL OUTER JOIN d_cand d "
        f"ON {on} WHERE {differs})) WHERE status <> 'matched'"
    )
    for side in ("e_cand", "d_cand"):
        con.execute(f"DROP {'TABLE' if narrowed else 'VIEW'} {side}")
    if slim:
        con.execute(f"DROP TABLE {D_TWINS_TABLE}")


# From this many export key-days on, the join runs on the key-days without an exact twin
# only (``_candidates``). Below it both sides fit in memory and the plain join is cheaper:
# at 100k key-days the hashes cost 0.03-0.07 CPU-s more than they saved
# (benchmarks/README.md); at 1M the plain join spilled both sides to disk.
TWIN_FILTER_MIN_KEY_DAYS = 250_000


def _candidates(con: Any, metrics: Sequence[str], keyed: bool = False) -> None:
    """Tables ``e_cand`` and ``d_cand``: the key-days of each side whose key and compared
    metrics do not occur, exactly, on the other side; the join runs on these alone.

    Both sides hold one row per key-day, so a key-day that agrees exactly is one 64-bit
    hash of (key, compared metrics) found on both sides, and it can never be an offender
    (the join drops it by the same integer comparisons). Matching those hashes is a join
    on one integer column, which fits in memory; the full join on seven columns, five of
    them strings, spilled its two 1M-row sides to disk (2.1 s of the 1M diff, now ~1 s,
    benchmarks/README.md). A key-day that differs hides only if its hash equals one of the
    other side's (about n / 2^64: 5e-14 for 1M key-days); a NULL metric hashes as 0, as the
    join reads it.
    """
    # one type per column on both sides: an integer hashes alike in any width, but a
    # DOUBLE or a TIMESTAMP does not
    text = "".join(f', "{k}"::VARCHAR' for k in KEY_TEXT_COLUMNS)
    e_keys = d_keys = f'"day"::DATE{text}, "batch"::BOOLEAN'
    d_source = "d"
    if keyed:
        # the key hash both sides carry (formats.key_hash_sql), not the five texts: d's
        # keys came joined, and splitting 1M of them to hash cells would cost more than the
        # hashes save. Joined keys are equal only when the cells are: every database key
        # holds exactly its 4 separators (usage_arrow checks), so an export key joined
        # alike has cells without one, and the very same cells
        e_keys = d_keys = '"day"::DATE, kh'
        d_source = "d_keyed"
    values = "".join(f', coalesce("{m}", 0)::BIGINT' for m in metrics)
    e_hash, d_hash = f"hash({e_keys}{values})", f"hash({d_keys}{values})"
    con.execute(f"CREATE TEMP TABLE e_hash AS SELECT {e_hash} AS h FROM e_join")
    con.execute(f"CREATE TEMP TABLE d_hash AS SELECT {d_hash} AS h FROM {d_source}")
    con.execute(
        "CREATE TEMP TABLE unmatched AS SELECT coalesce(x.h, y.h) AS h FROM e_hash x "
        "FULL OUTER JOIN d_hash y ON x.h = y.h WHERE x.h IS NULL OR y.h IS NULL"
    )
    con.execute("DROP TABLE e_hash")
    con.execute("DROP TABLE d_hash")
    kept = "WHERE {} IN (SELECT h FROM unmatched)"
    con.execute(f"CREATE TEMP TABLE e_cand AS SELECT * FROM e_join {kept.format(e_hash)}")
    d_kept = f"SELECT * FROM {d_source} {kept.format(d_hash)}"
    if d_source == "d_keyed":  # split only the rows kept
        d_kept = keyday_cells_sql(f"({d_kept})")
    con.execute(f"CREATE TEMP TABLE d_cand AS {d_kept}")
    con.execute("DROP TABLE unmatched")


def _counts(
    con: Any, days: Sequence[DayResult], rollup: DailyRollup, db: DbDays, export_key_days: int
) -> dict[str, int]:
    """The report's counts: both sides' rows and key-days, judged and not."""
    counts = dict.fromkeys(("matched", *OFFENDER_KINDS), 0)
    unjudged_key_days = 0
    for d in days:
        if d.judged:
            for status, n in d.key_days.items():
                counts[status] += n
        else:
            unjudged_key_days += sum(d.key_days.values())
    (judged_offenders,) = con.execute("SELECT count(*) FROM offenders WHERE judged").fetchone()
    return {
        "exportRows": rollup.rows,
        "exportBadRows": rollup.problem_count,
        "exportEmptyBucketRows": rollup.empty_bucket_rows,
        "exportRowsWithoutIds": rollup.rows_without_ids,
        "exportRowsOutsideRange": rollup.rows_outside_range,
        "exportKeyDays": export_key_days,
        "dbRows": db.rows,
        "dbRowsWithoutIds": db.no_ids,
        "dbUnalignedRows": db.unaligned,
        "dbKeyDays": int(db.key_days),
        "judgedKeyDays": sum(counts.values()),
        "unjudgedKeyDays": unjudged_key_days,
        "judgedOffenders": int(judged_offenders),
        **counts,
    }


def _unrecorded(
    days: Sequence[DayResult], metrics: Sequence[str], probe: UnrecordedProbe | None
) -> dict[date, tuple[str, ...]]:
    """Judged day -> metrics NULL in every DB row of it (asked only where the DB has 0)."""
    candidates = {
        d.day: [m for m in metrics if d.db[m] == 0 and d.export[m] > 0] for d in days if d.judged
    }
    candidates = {day: ms for day, ms in candidates.items() if ms}
    if probe is None or not candidates:
        return {}
    asked = sorted({m for ms in candidates.values() for m in ms}, key=METRICS.index)
    answer = probe(sorted(candidates), asked)
    out = {}
    for day, ms in candidates.items():
        found = tuple(m for m in ms if m in answer.get(day, frozenset()))
        if found:
            out[day] = found
    return out


def _renames(
    con: Any, metrics: Sequence[str], threshold: float, unrecorded: Mapping[date, Sequence[str]]
) -> list[Rename]:
    """Pair judged key-days missing on each side that differ only in the model's punctuation
    (the app stores gpt-4.1-mini as gpt-4-1-mini) and agree on every metric; mark them."""
    con.execute("ALTER TABLE offenders ADD COLUMN renamed VARCHAR")
    same = " AND ".join(f'x."{k}" = y."{k}"' for k in ("day", *KEY_TEXT_COLUMNS[:3], "batch"))
    same += " AND x.service_tier = y.service_tier"
    norm = "regexp_replace(lower({}.model), '[^a-z0-9]', '', 'g')"
    pairs_metrics = ", ".join(f'x."e_{m}" AS "x_{m}", y."d_{m}" AS "y_{m}"' for m in METRICS)
    fails = sql_fails_any(metrics, threshold, unrecorded, e="x_", d="y_")
    equal = " AND ".join(f'coalesce("x_{m}", 0) = coalesce("y_{m}", 0)' for m in metrics) or "true"
    con.execute(
        f"CREATE TEMP TABLE renames AS SELECT * FROM (SELECT x.day AS day, x.model AS e_model, "
        f"y.model AS d_model, x.project_id, x.api_key_id, x.user_id, x.service_tier, x.batch, "
        f"{pairs_metrics} FROM offenders x JOIN offenders y ON {same} "
        f"AND x.model <> y.model AND {norm.format('x')} = {norm.format('y')} "
        f"WHERE x.status = 'missingInDb' AND y.status = 'missingInCsv' AND x.judged AND y.judged) "
        f"WHERE NOT ({fails})"
    )
    rows = con.execute(
        f"SELECT e_model, d_model, count(*), bool_and({equal}) FROM renames "
        f"GROUP BY ALL ORDER BY 3 DESC, 1, 2"
    ).fetchall()
    if rows:
        keys = ("day", "project_id", "api_key_id", "user_id", "service_tier", "batch")
        match = " AND ".join(f'o."{k}" = r."{k}"' for k in keys)
        con.execute(
            f"UPDATE offenders o SET renamed = r.d_model FROM renames r WHERE {match} "
            f"AND o.status = 'missingInDb' AND o.model = r.e_model"
        )
        con.execute(
            f"UPDATE offenders o SET renamed = r.e_model FROM renames r WHERE {match} "
            f"AND o.status = 'missingInCsv' AND o.model = r.d_model"
        )
    con.execute("DROP TABLE renames")
    return [Rename(e, d, int(n), bool(eq)) for e, d, n, eq in rows]


def _sample(
    con: Any,
    kind: str,
    metrics: tuple[str, ...],
    policy: Policy,
    unrecorded: Mapping[date, Sequence[str]] | None = None,
) -> list[Offender]:
    """The worst offenders of one kind: judged first, then by relative delta (or size)."""
    keys = ("day", *KEY_TEXT_COLUMNS, "batch")
    cols = ", ".join(f'"{c}"' for c in (*keys, "judged", "e_n", "d_n", "renamed"))
    e_cols = ", ".join(f'"e_{m}"' for m in METRICS)
    d_cols = ", ".join(f'"d_{m}"' for m in METRICS)
    rows = con.execute(
        f"SELECT {cols}, {e_cols}, {d_cols} FROM offenders WHERE status = ? "
        f"ORDER BY judged DESC, worst DESC, day, project_id, api_key_id, user_id, model "
        f"LIMIT {int(policy.sample_size)}",
        [kind],
    ).fetchall()
    out = []
    k = len(keys)
    for row in rows:
        key = DayKey(*row[:k])
        judged, e_n, d_n, renamed = row[k : k + 4]
        e_vals, d_vals = row[k + 4 : k + 4 + len(METRICS)], row[k + 4 + len(METRICS) :]
        export = (
            None if e_n is None else {m: int(v or 0) for m, v in zip(METRICS, e_vals, strict=True)}
        )
        db = None if d_n is None else {m: int(v or 0) for m, v in zip(METRICS, d_vals, strict=True)}
        findings: tuple[Finding, ...] = ()
        if export is not None and db is not None:
            skip = (unrecorded or {}).get(key.day, ())
            judged_metrics = [m for m in metrics if m not in skip]
            found = metric_findings(export, db, judged_metrics, policy.threshold)
            found.sort(key=lambda f: -abs(f.relative) if math.isfinite(f.relative) else 0)
            findings = tuple(found)
        out.append(
            Offender(
                kind,
                key,
                bool(judged),
                export,
                db,
                int(e_n or 0),
                int(d_n or 0),
                findings,
                renamed,
            )
        )
    return out


def write_detail(con: Any, path: Path, metrics: tuple[str, ...], rollup: DailyRollup) -> int:
    """Every offender and bad row, one JSON object a line, gzip; streamed by DuckDB."""
    path.parent.mkdir(parents=True, exist_ok=True)
    e_struct = ", ".join(f'"{m}" := "e_{m}"' for m in METRICS)
    d_struct = ", ".join(f'"{m}" := "d_{m}"' for m in METRICS)
    con.execute(
        f'COPY (SELECT status AS kind, judged, CAST(day AS VARCHAR) AS day, project_id AS "projectId", '
        f'api_key_id AS "apiKeyId", user_id AS "userId", model, service_tier AS "serviceTier", '
        f"batch, CASE WHEN e_n IS NULL THEN NULL ELSE struct_pack({e_struct}) END AS csv, "
        f"CASE WHEN d_n IS NULL THEN NULL ELSE struct_pack({d_struct}) END AS db, "
        f'e_n AS "csvRecordCount", d_n AS "dbRecordCount", worst '
        f"FROM offenders ORDER BY judged DESC, worst DESC) "
        f"TO '{sql_path(path)}' (FORMAT json, COMPRESSION gzip)"
    )
    (lines,) = con.execute("SELECT count(*) FROM offenders").fetchone()
    # the bad-row sample is appended as a second gzip member (readers see one stream)
    with gzip.open(path, "at", encoding="utf-8") as fh:
        for p in rollup.problems:
            fh.write(
                json.dumps({"kind": "badRow", "file": p.file, "line": p.line, "reason": p.reason})
                + "\n"
            )
    return int(lines) + len(rollup.problems)
