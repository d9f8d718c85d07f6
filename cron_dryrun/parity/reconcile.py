"""The parity diff: OpenAI usage export vs usage_events, per key and UTC day.

Policy (the runbook's defaults, contract.md section 6):

- a key x day present on one side only fails;
- a token metric whose relative delta ``(db - export) / max(export, 1)`` exceeds the
  threshold (default 0.02) fails, per key-day and in total;
- ``num_model_requests`` must match exactly;
- a day the export does not fully cover, or the run's still-open day, is reported
  and not judged;
- rows without project, key and user ids are counted and reported, never compared;
- bad export rows fail the check by default and are never added to a total.

The judging rules are the pure functions ``metric_findings`` and ``judge``; the
comparison at scale runs in DuckDB (in process) with the same rule written in SQL.
The database side arrives as a CSV of daily totals (``TOTALS_COLUMNS``) written by a
callable (usage_totals), or as DuckDB tables loaded by a ``DbLoader`` into the comparison's
own database (usage_arrow); this module never talks to PostgreSQL itself.
"""

from __future__ import annotations

import gzip
import json
import math
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from cron_dryrun.parity.exports import (
    EXACT_METRICS,
    HAS_IDS_SQL,
    KEY_TEXT_COLUMNS,
    METRICS,
    SECONDS_PER_DAY,
    TOTALS_COLUMNS,
    DailyRollup,
    DayKey,
    ExportProblem,
    SharedKeyDays,
    common_metrics,
    day_coverage,
    duckdb_engine,
    expand_export_paths,
    export_file_message,
    overlapping_buckets,
    read_json_pages,
    sniff_export,
    stage_delimited_duckdb,
    totals_table_ddl,
    write_totals_csv,
)

REPORT_SCHEMA_VERSION = 1
SAMPLE_SIZE = 50
TOTALS_LISTED = 3  # total findings named in the reasons; the report lists them all
# DuckDB spills to disk past this; with Python, the libraries and the transfer buffers the
# process peaks near 375 MB at 1M key-days (300MB: ~425 MB, no faster; benchmarks/README.md).
DUCKDB_MEMORY_LIMIT = "250MB"


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
    ``fallback``: why the preferred reader was not used (for the report), or None.
    """

    totals: tuple[Path, ...]
    stats: Path | None = None
    reader: str = "copy-csv"
    tables: bool = False
    fallback: str | None = None


DB_STATS_COLUMNS: tuple[str, ...] = ("day", "aligned", "has_ids", "records", *METRICS)
# writes the database's daily totals for [first_day, last_day] as headerless TOTALS_COLUMNS
# CSV rows to the given path; returns what it wrote (None: just that path)
DbTotalsWriter = Callable[[date, date, Path], DbTotalsFiles | None]
# for the given days and metrics: per day, the metrics that are NULL in every usage_events
# row of that day that parity compares (aligned windows, with ids); asked only about
# metrics whose DB day total is 0 while the export's is not (usage_totals.unrecorded_probe)
UnrecordedProbe = Callable[[Sequence[date], Sequence[str]], Mapping[date, frozenset[str]]]
DB_KEYDAYS_TABLE, DB_STATS_TABLE = "db_keydays", "db_stats"


class DbLoader(ABC):
    """A database side that loads its key-days straight into the comparison's DuckDB.

    ``load`` runs in the database thread with its own DuckDB cursor (a connection to the
    same in-memory database, under the same memory limit) and returns what it delivered:
    the tables (``DbTotalsFiles(tables=True)``) or, when it fell back, CSV files at ``out``.
    """

    @abstractmethod
    def load(self, first_day: date, last_day: date, out: Path, duck: Any) -> DbTotalsFiles: ...


def db_stats_sql(keydays: str = DB_KEYDAYS_TABLE) -> str:
    """Per (day, aligned, has ids) over a key-day table: rows, metric sums (NULL as 0),
    ``recorded_<metric>`` (key-days where some row recorded the metric: 0 means NULL in
    every row, which a sum of 0 cannot tell apart) and ``key_days``."""
    sums = ", ".join(f'coalesce(sum("{m}"), 0)::BIGINT AS "{m}"' for m in METRICS)
    recorded = ", ".join(f'count("{m}") AS "recorded_{m}"' for m in METRICS)
    return (
        f"SELECT day, aligned, {HAS_IDS_SQL} AS has_ids, "
        f"coalesce(sum(record_count), 0)::BIGINT AS records, {sums}, {recorded}, "
        f"count(*) AS key_days FROM {keydays} GROUP BY ALL"
    )


Progress = Callable[[str], None]


@dataclass(frozen=True)
class Policy:
    threshold: float = 0.02
    bad_rows_fail: bool = True
    sample_size: int = SAMPLE_SIZE

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"parity threshold must be in (0, 1), got {self.threshold!r}")


# -- the judging rule (pure) ----------------------------------------------------------------------


def relative_delta(export: int, db: int) -> float:
    """(db - export) relative to the export; an export of 0 counts as 1 so 0 vs 3 is +300 %."""
    return (db - export) / max(export, 1)


@dataclass(frozen=True)
class Finding:
    """One metric out of policy."""

    metric: str
    export: int
    db: int

    @property
    def delta(self) -> int:
        return self.db - self.export

    @property
    def relative(self) -> float:
        return relative_delta(self.export, self.db)

    def describe(self) -> str:
        return f"{self.metric} export {self.export} db {self.db}: {self.direction()}"

    def direction(self) -> str:
        """Which way the delta goes, in words: nobody should have to work out a sign."""
        if self.delta == 0:
            return "db equals the export"
        side = "above" if self.delta > 0 else "below"
        if self.export == 0:
            return f"db is {abs(self.delta)} {side} the export (export 0)"
        return f"db is {abs(self.relative) * 100:.2f} % {side} the export ({self.delta:+d})"

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "export": self.export,
            "db": self.db,
            "delta": self.delta,
            "relativeDelta": round(self.relative, 6),
        }


def metric_findings(
    export: Mapping[str, int], db: Mapping[str, int], metrics: Sequence[str], threshold: float
) -> list[Finding]:
    """Metrics out of policy: token metrics beyond the threshold, exact metrics unequal."""
    findings = []
    for metric in metrics:
        e, d = int(export.get(metric, 0)), int(db.get(metric, 0))
        out = e != d if metric in EXACT_METRICS else abs(relative_delta(e, d)) > threshold
        if out:
            findings.append(Finding(metric, e, d))
    return findings


def _sql_fails(metric: str, threshold: float) -> str:
    """metric_findings' rule in SQL, over e_<m> / d_<m> columns (same float operations)."""
    e, d = f'coalesce("e_{metric}", 0)', f'coalesce("d_{metric}", 0)'
    if metric in EXACT_METRICS:
        return f"({e} <> {d})"
    return f"(abs(CAST({d} - {e} AS DOUBLE) / greatest({e}, 1)) > {threshold!r})"


# -- result -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offender:
    """A key-day on one side only, or with metrics out of policy."""

    kind: str  # "mismatched", "missingInDb" or "missingInCsv"
    key: DayKey
    judged: bool
    export: dict[str, int] | None
    db: dict[str, int] | None
    export_records: int
    db_records: int
    findings: tuple[Finding, ...] = ()
    renamed: str | None = None  # the model's name on the other side, when it was renamed

    def describe(self) -> str:
        if self.kind == "mismatched":
            return f"{self.key.label()}: " + "; ".join(f.describe() for f in self.findings)
        side = self.export if self.kind == "missingInDb" else self.db
        where = "missing in DB" if self.kind == "missingInDb" else "missing in export"
        usage = ", ".join(
            f"{m} {(side or {}).get(m, 0)}" for m in ("input_tokens", "output_tokens")
        )
        other = "export" if self.kind == "missingInDb" else "db"
        return f"{self.key.label()}: {where} ({other} {usage})"


@dataclass
class DayResult:
    day: date
    judged: bool
    reason: str | None
    coverage_seconds: int
    export: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))
    db: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))
    key_days: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("matched", *OFFENDER_KINDS), 0)
    )


OFFENDER_KINDS: tuple[str, ...] = ("mismatched", "missingInDb", "missingInCsv")


@dataclass(frozen=True)
class Rename:
    """Key-days on both sides that differ only in the model's punctuation."""

    export_model: str
    db_model: str
    key_days: int
    equal: bool  # every metric equal (else: within policy)

    def describe(self) -> str:
        agree = "totals equal" if self.equal else "totals within policy"
        return (
            f"model renamed by ingestion: {self.export_model} → {self.db_model} "
            f"({self.key_days} key-days, {agree})"
        )


@dataclass
class DiffResult:
    policy: Policy
    first_day: date
    last_day: date
    open_from: date | None
    files: list[str]
    metrics_compared: tuple[str, ...]
    days: list[DayResult]
    counts: dict[str, int]
    offenders: dict[str, list[Offender]]  # samples, worst first
    problems: list[ExportProblem]  # sample
    without_ids: dict[str, dict[str, int]]
    generated_at: datetime
    detail_path: Path | None = None
    detail_lines: int = 0
    elapsed_seconds: float = 0.0
    # judged day -> metrics NULL in every DB row of it: not recorded by ingestion, not judged
    unrecorded: dict[date, tuple[str, ...]] = field(default_factory=dict)
    renames: list[Rename] = field(default_factory=list)
    db_reader: str = "copy-csv"  # how usage_events was read (DB_READERS)
    db_reader_fallback: str | None = None  # why not over ADBC, when it fell back

    @property
    def judged_days(self) -> list[date]:
        return [d.day for d in self.days if d.judged]

    def totals(self, side: str) -> dict[str, int]:
        """Sum over judged days: what was actually compared (unrecorded metrics left out)."""
        out = dict.fromkeys(METRICS, 0)
        for day in self.days:
            if day.judged:
                skip = self.unrecorded.get(day.day, ())
                for metric, value in getattr(day, side).items():
                    if metric not in skip:
                        out[metric] += value
        return out

    def warnings(self) -> list[str]:
        """What did not fail the check but a reader must know: unrecorded metrics."""
        by_metrics: dict[tuple[str, ...], list[date]] = {}
        for day, metrics in sorted(self.unrecorded.items()):
            by_metrics.setdefault(metrics, []).append(day)
        out = []
        for metrics, days in by_metrics.items():
            listed = ", ".join(d.isoformat() for d in days)
            out.append(
                f"not recorded by ingestion: {', '.join(metrics)} NULL in every DB row of "
                f"{listed} (the export has them): not judged; the other metrics were"
            )
        return out

    @property
    def total_findings(self) -> list[Finding]:
        return metric_findings(
            self.totals("export"), self.totals("db"), self.metrics_compared, self.policy.threshold
        )


@dataclass(frozen=True)
class Judgement:
    verdict: str  # "pass", "fail" or "inconclusive"
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


def judge(result: DiffResult) -> Judgement:
    """The parity verdict from a diff result: every failing rule becomes one reason."""
    reasons: list[str] = []
    c = result.counts
    warnings = tuple(result.warnings())
    if c["exportBadRows"] and result.policy.bad_rows_fail:
        files = [p for p in result.problems if p.kind == "file"]
        overlaps = [p for p in result.problems if p.kind == "overlap"]
        rows = [p for p in result.problems if p.kind == "row"]
        reasons.extend(export_file_message(p) for p in files)
        reasons.extend(f"export file {p.file} {p.reason}" for p in overlaps)
        n_rows = c["exportBadRows"] - len(files) - len(overlaps)
        if n_rows > 0:
            first = f" (first: {rows[0]})" if rows else ""
            reasons.append(f"{n_rows} bad export row(s){first}")
    reasons.extend(r.describe() for r in result.renames)
    renamed = sum(r.key_days for r in result.renames)
    for kind, text in (
        ("mismatched", "key-day(s) with metrics out of policy"),
        ("missingInDb", "key-day(s) in the export but missing in the DB"),
        ("missingInCsv", "key-day(s) in the DB but missing in the export"),
    ):
        n = c[kind] - (renamed if kind != "mismatched" else 0)
        if n > 0:
            reason = f"{n} {'more ' if renamed and kind != 'mismatched' else ''}{text}"
            if kind == "missingInDb" and c["dbUnalignedRows"]:
                reason += "; " + unaligned_hint(c["dbUnalignedRows"])
            reasons.append(reason)
    totals = result.total_findings
    reasons.extend(f"total {f.describe()}" for f in totals[:TOTALS_LISTED])
    if len(totals) > TOTALS_LISTED:
        reasons.append(f"{len(totals) - TOTALS_LISTED} more metric(s) out of policy in total")
    if reasons:
        return Judgement("fail", tuple(reasons), warnings)
    if not result.judged_days:
        unjudged = "; ".join(f"{d.day}: {d.reason}" for d in result.days) or "no days in range"
        return Judgement("inconclusive", (f"no day could be judged ({unjudged})",), warnings)
    return Judgement("pass", (), warnings)


def unaligned_hint(rows: int) -> str:
    """What unaligned DB rows mean: the flag-off signature, and the fix."""
    return (
        f"the DB holds {rows} row(s) whose windows are not UTC days (the flag-off signature: "
        "the cron fetched [now-24h, now) instead of daily windows), so they cannot match; "
        "set ENABLE_DAILY_USAGE_WINDOWS=true in the staging environment and redeploy"
    )


def summary_line(result: DiffResult) -> str:
    """One line for logs and the run summary."""
    judgement = judge(result)
    c = result.counts
    days = ", ".join(d.isoformat() for d in result.judged_days) or "none"
    return (
        f"parity {judgement.verdict.upper()}: judged {days}; {c['judgedKeyDays']} key-days, "
        f"{c['mismatched']} mismatched, {c['missingInDb']} missing in DB, "
        f"{c['missingInCsv']} missing in export, {c['exportBadRows']} bad export rows "
        f"(threshold {result.policy.threshold * 100:g} %)"
    )


def failure_message(result: DiffResult, report: Path | None = None, limit: int = 5) -> str:
    """What a failing check says: the reasons, then the worst offenders, worst first."""
    judgement = judge(result)
    lines = [f"parity check {judgement.verdict}: " + "; ".join(judgement.reasons)]
    lines.extend(f"warning: {w}" for w in judgement.warnings)
    worst = [
        o
        for kind in OFFENDER_KINDS
        for o in result.offenders[kind]
        if o.judged and o.renamed is None
    ]
    if worst:
        lines.append("worst offenders:")
        lines.extend(f"  {o.describe()}" for o in worst[:limit])
        unexplained = result.counts["judgedOffenders"] - 2 * sum(r.key_days for r in result.renames)
        if len(worst) > limit or unexplained > limit:
            lines.append(f"  ... {unexplained - limit} more")
    unjudged = [d for d in result.days if not d.judged]
    if unjudged:
        lines.append(
            "not judged: " + "; ".join(f"{d.day.isoformat()} ({d.reason})" for d in unjudged)
        )
    if report is not None:
        lines.append(f"report: {report}")
    return "\n".join(lines)


def chart_days(result: DiffResult) -> list[dict[str, Any]]:
    """Per day, input + output tokens on each side and whether the day offends (for the
    report's bar chart: html_report.ParityDay fields)."""
    out = []
    for d in result.days:
        offenders = sum(n for kind, n in d.key_days.items() if kind != "matched")
        out.append(
            {
                "day": d.day.isoformat(),
                "judged": d.judged,
                "export_tokens": d.export["input_tokens"] + d.export["output_tokens"],
                "db_tokens": d.db["input_tokens"] + d.db["output_tokens"],
                "offending": d.judged and offenders > 0,
                "reason": d.reason,
            }
        )
    return out


# -- report -----------------------------------------------------------------------------------


def report_path(audit_dir: Path, now: datetime) -> Path:
    """audit/telemetry-audit/<2025-10-07T22-44-28Z>-cron-diff.json; never an existing file."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    folder = Path(audit_dir) / "telemetry-audit"
    candidate = folder / f"{stamp}-cron-diff.json"
    n = 2
    while candidate.exists() or detail_path_for(candidate).exists():
        candidate = folder / f"{stamp}-cron-diff-{n}.json"
        n += 1
    return candidate


def detail_path_for(report: Path) -> Path:
    return report.with_name(report.name.removesuffix(".json") + ".detail.jsonl.gz")


def _record(key: DayKey, metrics: Mapping[str, int] | None, records: int) -> dict[str, Any]:
    """The app's record shape (key fields, metrics, recordCount), plus the day."""
    start = datetime(key.day.year, key.day.month, key.day.day, tzinfo=UTC)
    return {
        "day": key.day.isoformat(),
        "windowStartIso": start.isoformat().replace("+00:00", "Z"),
        "windowEndIso": (start + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "projectId": key.project_id,
        "apiKeyId": key.api_key_id,
        "userId": key.user_id,
        "model": key.model,
        "serviceTier": key.service_tier or None,
        "batch": key.batch,
        "metrics": dict(metrics or {}),
        "recordCount": records,
    }


def _key_json(key: DayKey) -> dict[str, Any]:
    record = _record(key, None, 0)
    for extra in ("metrics", "recordCount"):
        record.pop(extra)
    return record


def report_dict(result: DiffResult, report: Path | None = None) -> dict[str, Any]:
    """The bounded report: a superset of the app's diff output (contract.md section 6)."""
    judgement = judge(result)
    mismatched = []
    for o in result.offenders["mismatched"]:
        mismatched.append(
            {
                "key": _key_json(o.key),
                # the app's sign: csv - db
                "deltas": {
                    m: (o.export or {}).get(m, 0) - (o.db or {}).get(m, 0)
                    for m in result.metrics_compared
                    if (o.export or {}).get(m, 0) != (o.db or {}).get(m, 0)
                },
                "csv": _record(o.key, o.export, o.export_records),
                "db": _record(o.key, o.db, o.db_records),
                "findings": [f.as_json() for f in o.findings],
                "judged": o.judged,
            }
        )

    def one_sided(kind: str, side: str) -> list[dict[str, Any]]:
        out = []
        for o in result.offenders[kind]:
            metrics = o.export if side == "export" else o.db
            records = o.export_records if side == "export" else o.db_records
            out.append({**_record(o.key, metrics, records), "judged": o.judged})
        return out

    return {
        "schemaVersion": REPORT_SCHEMA_VERSION,
        "tool": "cron-dryrun diff",
        "generatedAt": result.generated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "verdict": judgement.verdict,
        "reasons": list(judgement.reasons),
        "warnings": list(judgement.warnings),
        "summary": summary_line(result),
        "policy": {
            "threshold": result.policy.threshold,
            "relativeDelta": "(db - export) / max(export, 1)",
            "tokenMetrics": [m for m in result.metrics_compared if m not in EXACT_METRICS],
            "exactMetrics": [m for m in result.metrics_compared if m in EXACT_METRICS],
            "metricsNotInExport": [m for m in METRICS if m not in result.metrics_compared],
            "badRowsFail": result.policy.bad_rows_fail,
            "sampleSize": result.policy.sample_size,
        },
        "windowRange": {
            "from": result.first_day.isoformat(),
            "to": result.last_day.isoformat(),
            "openFrom": result.open_from.isoformat() if result.open_from else None,
            "judgedDays": [d.isoformat() for d in result.judged_days],
        },
        "days": [
            {
                "day": d.day.isoformat(),
                "judged": d.judged,
                "reason": d.reason,
                "exportCoverageSeconds": d.coverage_seconds,
                "csv": d.export,
                "db": d.db,
                "keyDays": d.key_days,
            }
            for d in result.days
        ],
        "counts": dict(result.counts),
        "withoutIds": result.without_ids,
        "mismatched": mismatched,
        "missingInDb": one_sided("missingInDb", "export"),
        "missingInCsv": one_sided("missingInCsv", "db"),
        "totals": {"csv": result.totals("export"), "db": result.totals("db")},
        "notRecordedByIngestion": {
            d.isoformat(): list(m) for d, m in sorted(result.unrecorded.items())
        },
        "renamedModels": [
            {
                "exportModel": r.export_model,
                "dbModel": r.db_model,
                "keyDays": r.key_days,
                "totalsEqual": r.equal,
            }
            for r in result.renames
        ],
        "totalFindings": [f.as_json() for f in result.total_findings],
        "badRows": [{"file": p.file, "line": p.line, "reason": p.reason} for p in result.problems],
        "inspectedCsvFiles": list(result.files),
        "detail": (
            {"path": str(result.detail_path), "lines": result.detail_lines}
            if result.detail_path
            else None
        ),
        "report": str(report) if report else None,
        "elapsedSeconds": round(result.elapsed_seconds, 3),
        "dbReader": result.db_reader,
        "dbReaderFallback": result.db_reader_fallback,
    }


def report_json(data: Mapping[str, Any]) -> str:
    """The report file's text."""
    return json.dumps(data, indent=2) + "\n"


def write_report(result: DiffResult, path: Path) -> dict[str, Any]:
    """Write the report exclusively (an existing file is never overwritten)."""
    data = report_dict(result, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(report_json(data))
    return data


def reserve_report(audit_dir: Path, now: datetime) -> Path:
    """A free report name (``report_path``) whose detail file is created empty right away.

    The detail name is taken with O_EXCL, so two runs in the same second cannot pick
    the same pair; the report itself is then written by whoever owns the audit folder
    (the evidence writer), which never overwrites either.
    """
    while True:
        report = report_path(audit_dir, now)
        report.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(detail_path_for(report), "xb"):
                return report
        except FileExistsError:  # taken between the check and the create: next name
            continue


# -- the comparison (DuckDB) ------------------------------------------------------------------


def _totals_csv_reader(paths: Sequence[Path]) -> str:
    """TOTALS_COLUMNS rows from headerless CSV files (the database side, or a JSON export's).

    Empty text cells are '' and empty counts 0: the database side writes a zero sum as an
    empty cell (cheaper for the server to format).
    """
    types = {"day": "DATE", "batch": "INTEGER", "aligned": "INTEGER"}
    columns = ", ".join(
        f"'{c}': '{types.get(c, 'BIGINT' if c in ('record_count', *METRICS) else 'VARCHAR')}'"
        for c in TOTALS_COLUMNS
    )
    files = "[" + ", ".join(f"'{_esc(p)}'" for p in paths) + "]"
    text = ", ".join(f'coalesce("{c}", \'\') AS "{c}"' for c in KEY_TEXT_COLUMNS)
    counts = ", ".join(f'coalesce("{c}", 0) AS "{c}"' for c in ("record_count", *METRICS))
    return (
        f"SELECT day, {text}, batch <> 0 AS batch, aligned <> 0 AS aligned, {counts} "
        f"FROM read_csv({files}, columns={{{columns}}}, header=false, auto_detect=false, "
        f"delim=',', quote='\"', escape='\"', allow_quoted_nulls=false)"
    )


def _stats_csv_reader(path: Path) -> str:
    """DB_STATS_COLUMNS rows (headerless CSV): the database's own per-day sums."""
    types = {"day": "DATE", "aligned": "INTEGER", "has_ids": "INTEGER"}
    columns = ", ".join(f"'{c}': '{types.get(c, 'BIGINT')}'" for c in DB_STATS_COLUMNS)
    sums = ", ".join(f'coalesce("{c}", 0)' for c in DB_STATS_COLUMNS[3:])
    return (
        f"(SELECT day, aligned <> 0, has_ids <> 0, {sums} FROM read_csv('{_esc(path)}', "
        f"columns={{{columns}}}, header=false, auto_detect=false, delim=',', quote='\"', "
        f"escape='\"'))"
    )


def _load_totals_csv(con: Any, table: str, path: Path) -> None:
    con.execute(f"INSERT INTO {table} {_totals_csv_reader([path])}")


def _esc(path: Path) -> str:
    return str(path).replace("'", "''")


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


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
) -> DiffResult:
    """Compare the exports with the database's daily totals over [first_day, last_day].

    Without a range, the export's days are used. ``open_from``: that day and later are
    still open (the run's current day) and are reported, not judged. ``unrecorded_probe``:
    asked, only when a judged day's DB total of a metric is 0 while the export's is not,
    whether that metric is NULL in every DB row of the day (then it is reported as not
    recorded by ingestion, and not judged on that day).

    The database groups and streams its totals (a thread, one or two server processes)
    while DuckDB reads the export; then one full outer join on key x day keeps only the
    offenders. Neither side is ever held in Python.
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
        # imported here: the pure parts of this module must not need it
        duckdb = duckdb_engine()

        # one in-memory database, one memory limit: a DbLoader's Arrow scan and grouping
        # run under it too (on a cursor of their own)
        con = duckdb.connect(
            config={
                "memory_limit": DUCKDB_MEMORY_LIMIT,
                "temp_directory": tmp,
                "preserve_insertion_order": False,
            }
        )
        db_thread: _DbThread | None = None
        if first_day is not None and last_day is not None:
            # the database groups while DuckDB reads the export: two cores, both busy.
            # Started after DuckDB's import: the writer may first import the PostgreSQL
            # driver (GIL-bound), which then overlaps DuckDB's read (GIL released)
            db_thread = _DbThread(db_totals, first_day, last_day, db_csv, con.cursor())
            db_thread.start()
        try:
            con.execute("SET enable_progress_bar = false")
            buckets: dict[str, set[tuple[datetime, datetime]]] = {}
            metric_sets: list[set[str]] = []
            sources: list[str] = []  # SELECTs of TOTALS_COLUMNS key-day rows, one per file
            source_of: dict[str, str] = {}  # file -> its SELECT
            rollup = DailyRollup()  # counts for every file; totals only from JSON pages
            for i, path in enumerate(files, 1):
                say(f"reading export {i}/{len(files)}: {path.name}")
                fmt = sniff_export(path)
                if fmt.problem(str(path)) is None:  # a file that is not read decides nothing
                    metric_sets.append(set(fmt.metrics))
                if fmt.kind == "json" and fmt.unreadable is None:
                    part = DailyRollup()
                    for item in read_json_pages(path):
                        part.add(item, first_day, last_day)
                    csv_path = work / f"export_{i}.csv"
                    with open(csv_path, "w", encoding="utf-8", newline="") as fh:
                        write_totals_csv(part, fh)
                    con.execute(totals_table_ddl(f"export_json_{i}"))
                    _load_totals_csv(con, f"export_json_{i}", csv_path)
                    sources.append(f"SELECT * FROM export_json_{i}")
                    source_of[str(path)] = sources[-1]
                    _merge_counts(
                        rollup,
                        part.rows,
                        part.empty_bucket_rows,
                        part.rows_without_ids,
                        part.rows_outside_range,
                        part.without_ids_totals,
                        part.problems,
                        part.problem_count,
                    )
                    buckets[str(path)] = part.buckets.get(str(path), set())
                else:
                    staged = stage_delimited_duckdb(
                        con, path, f"export_rows_{i}", first_day, last_day, fmt
                    )
                    load = staged.load
                    if staged.relation is not None:
                        sources.append(staged.relation)
                        source_of[str(path)] = staged.relation
                    _merge_counts(
                        rollup,
                        load.rows,
                        load.empty_bucket_rows,
                        load.rows_without_ids,
                        load.rows_outside_range,
                        load.without_ids_totals,
                        load.problems,
                        load.problem_count,
                    )
                    buckets[str(path)] = load.buckets
            for problem in overlapping_buckets(buckets, _shared_key_days(con, source_of)):
                rollup.add_problem(problem)
            coverage = day_coverage(b for spans in buckets.values() for b in spans)
            if first_day is None or last_day is None:
                known = sorted(coverage)
                if not known:
                    unreadable = [
                        export_file_message(p) for p in rollup.problems if p.kind == "file"
                    ]
                    raise ValueError(
                        "; ".join(
                            [*unreadable, "the export holds no readable bucket: nothing to compare"]
                        )
                    )
                first_day = first_day or known[0]
                last_day = last_day or known[-1]
            _export_side(con, sources, first_day, last_day)
            metrics = common_metrics(metric_sets)
            if db_thread is None:
                say("querying the database")
                db_files = _read_db(db_totals, first_day, last_day, db_csv, con)
            else:
                say("waiting for the database")
                db_thread.join()
                if db_thread.error is not None:
                    raise db_thread.error
                db_files = db_thread.files or DbTotalsFiles((db_csv,))
            say("comparing")
            _db_side(con, db_files)
            days = [
                _day_result(day, coverage.get(day, 0), open_from)
                for day in _days(first_day, last_day)
            ]
            result = _compare(
                con, policy, metrics, days, files, rollup, first_day, last_day, open_from,
                db_files, unrecorded_probe,
            )  # fmt: skip
            result.db_reader, result.db_reader_fallback = db_files.reader, db_files.fallback
            if detail_path is not None:
                say("writing the detail file")
                result.detail_path = detail_path
                result.detail_lines = _write_detail(con, detail_path, metrics, rollup)
        finally:
            con.close()
    result.generated_at = now or datetime.now(UTC)
    result.elapsed_seconds = time.perf_counter() - started
    return result


def _shared_key_days(con: Any, source_of: Mapping[str, str]) -> SharedKeyDays:
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


def _export_side(con: Any, sources: Sequence[str], first_day: date, last_day: date) -> None:
    """View ``e``: the export's key-day rows in [first_day, last_day], one per key-day."""
    ranged = f"day BETWEEN DATE '{first_day.isoformat()}' AND DATE '{last_day.isoformat()}'"
    if len(sources) == 1:  # one file is already one row per key-day: nothing to group
        con.execute(f"CREATE TEMP VIEW e AS SELECT * FROM ({sources[0]}) WHERE {ranged}")
        return
    con.execute(totals_table_ddl("e"))
    if sources:
        # several files may carry the same key-day: add them up (overlaps are reported)
        keys = ", ".join(f'"{k}"' for k in ("day", *KEY_TEXT_COLUMNS, "batch"))
        sums = ", ".join(f'sum("{m}")::BIGINT' for m in ("record_count", *METRICS))
        union = " UNION ALL ".join(f"SELECT * FROM ({src})" for src in sources)
        con.execute(
            f"INSERT INTO e SELECT {keys}, true, {sums} FROM ({union}) WHERE {ranged} GROUP BY ALL"
        )


def _db_side(con: Any, files: DbTotalsFiles) -> None:
    """Views for the join: ``e_join`` (export key-days) and ``d`` (database key-days)."""
    has_ids = HAS_IDS_SQL
    if files.tables:  # loaded by a DbLoader; NULL sums read as 0, as the CSV reader does
        cols = ", ".join(
            f'coalesce("{c}", 0) AS "{c}"' if c in METRICS else f'"{c}"' for c in TOTALS_COLUMNS
        )
        con.execute(f"CREATE TEMP VIEW db_daily AS SELECT {cols} FROM {DB_KEYDAYS_TABLE}")
    else:
        con.execute(f"CREATE TEMP VIEW db_daily AS {_totals_csv_reader(files.totals)}")
    con.execute("CREATE TEMP VIEW e_join AS SELECT * FROM e")
    # PostgreSQL grouped by key-day and alignment: the aligned rows are one per key-day
    con.execute(f"CREATE TEMP VIEW d AS SELECT * FROM db_daily WHERE aligned AND {has_ids}")


def _read_db(
    source: DbTotalsWriter | DbLoader, first: date, last: date, out: Path, duck: Any
) -> DbTotalsFiles:
    """The database side, whichever kind: a loader fills DuckDB, a writer writes CSV."""
    if isinstance(source, DbLoader):
        return source.load(first, last, out, duck)
    return source(first, last, out) or DbTotalsFiles((out,))


class _DbThread(threading.Thread):
    def __init__(
        self, source: DbTotalsWriter | DbLoader, first: date, last: date, out: Path, duck: Any
    ) -> None:
        super().__init__(name="db-totals", daemon=True)
        self.source, self.first, self.last, self.out = source, first, last, out
        self.duck = duck  # a DuckDB cursor of its own (a loader's), closed when done
        self.error: BaseException | None = None
        self.files: DbTotalsFiles | None = None

    def run(self) -> None:
        try:
            self.files = _read_db(self.source, self.first, self.last, self.out, self.duck)
        except BaseException as exc:  # handed to the main thread, raised there
            self.error = exc
        finally:
            self.duck.close()


def _merge_counts(
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


def _day_result(day: date, covered: int, open_from: date | None) -> DayResult:
    if open_from is not None and day >= open_from:
        reason: str | None = f"still open: the run's current day (from {open_from.isoformat()})"
    elif covered < SECONDS_PER_DAY:
        reason = f"export covers {covered} of {SECONDS_PER_DAY} s of this day"
    else:
        reason = None
    return DayResult(day, reason is None, reason, covered)


def _compare(
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
    keys = ("day", *KEY_TEXT_COLUMNS, "batch")
    has_ids = HAS_IDS_SQL
    by_day = {d.day: d for d in days}
    side_sums = ", ".join(f'coalesce(sum("{m}"), 0)' for m in METRICS)
    db_files = db_files or DbTotalsFiles(())
    if db_files.tables:  # the loader summed them per key-day group, counting key-days
        metric_cols = ", ".join(f'"{m}"' for m in METRICS)
        stats_sql = (
            f"SELECT day, aligned, has_ids, records, {metric_cols}, key_days FROM {DB_STATS_TABLE}"
        )
        db_key_days_known = True
        # NULL-ness is in the tables (same snapshot): no second query to the database
        unrecorded_probe = _tables_unrecorded_probe(con)
    elif db_files.stats is not None:  # the database summed them in the same snapshot
        stats_sql = f"SELECT * FROM {_stats_csv_reader(db_files.stats)}"
        db_key_days_known = False
    else:  # one pass over the totals files: everything but the join
        stats_sql = (
            f"SELECT day, aligned, {has_ids}, coalesce(sum(record_count), 0), {side_sums}, "
            f"count(*) FROM db_daily GROUP BY ALL"
        )
        db_key_days_known = True
    db_rows = db_no_ids = db_unaligned = db_key_days = 0
    db_no_id_sums = [0] * len(METRICS)
    for day, aligned, ids, records, *values in con.execute(stats_sql).fetchall():
        groups = values.pop() if db_key_days_known else 0
        db_rows += int(records)
        if not aligned:
            db_unaligned += int(records)
        elif not ids:
            db_no_ids += int(records)
            db_no_id_sums = [a + int(b) for a, b in zip(db_no_id_sums, values, strict=True)]
        else:
            db_key_days += int(groups)
            result_day = by_day.get(day)
            if result_day is not None:
                for metric, value in zip(METRICS, values, strict=True):
                    result_day.db[metric] += int(value)
    export_key_days = 0
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
    judged_sql = (
        "day IN (" + ", ".join(f"DATE '{d.isoformat()}'" for d in judged_days) + ")"
        if judged_days
        else "false"
    )
    fails = _sql_fails_all(metrics, policy.threshold, unrecorded)
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
    con.execute(
        f"CREATE TEMP TABLE offenders AS SELECT *, {judged_sql} AS judged, "
        f"CASE WHEN status = 'mismatched' THEN {worst} "
        f"ELSE CAST(coalesce(e_input_tokens, d_input_tokens, 0) + coalesce(e_output_tokens, "
        f"d_output_tokens, 0) AS DOUBLE) END AS worst FROM (SELECT *, CASE WHEN e_n IS NULL "
        f"THEN 'missingInCsv' WHEN d_n IS NULL THEN 'missingInDb' WHEN {fails} "
        f"THEN 'mismatched' ELSE 'matched' END AS status FROM (SELECT {picked}, "
        f"e.record_count AS e_n, d.record_count AS d_n, {sides} FROM e_join e FULL OUTER JOIN d "
        f"ON {on} WHERE {differs})) WHERE status <> 'matched'"
    )
    counts = dict.fromkeys(("matched", *OFFENDER_KINDS), 0)
    unjudged_key_days = 0
    for day, status, n in con.execute(
        "SELECT day, status, count(*) FROM offenders GROUP BY ALL"
    ).fetchall():
        result_day = by_day.get(day)
        if result_day is not None:
            result_day.key_days[status] += n
            if status != "missingInCsv":  # an export key-day that did not match
                result_day.key_days["matched"] -= n
    if not db_key_days_known:  # every DB key-day either matched one of the export's or not
        (db_key_days,) = con.execute(
            "SELECT ? - count(*) FILTER (WHERE status = 'missingInDb') "
            "+ count(*) FILTER (WHERE status = 'missingInCsv') FROM offenders",
            [export_key_days],
        ).fetchone()
    for d in days:
        if d.judged:
            for status, n in d.key_days.items():
                counts[status] += n
        else:
            unjudged_key_days += sum(d.key_days.values())
    renames = _renames(con, metrics, policy.threshold, unrecorded)
    offenders = {kind: _sample(con, kind, metrics, policy, unrecorded) for kind in OFFENDER_KINDS}
    (judged_offenders,) = con.execute("SELECT count(*) FROM offenders WHERE judged").fetchone()
    counts_out = {
        "exportRows": rollup.rows,
        "exportBadRows": rollup.problem_count,
        "exportEmptyBucketRows": rollup.empty_bucket_rows,
        "exportRowsWithoutIds": rollup.rows_without_ids,
        "exportRowsOutsideRange": rollup.rows_outside_range,
        "exportKeyDays": export_key_days,
        "dbRows": db_rows,
        "dbRowsWithoutIds": db_no_ids,
        "dbUnalignedRows": db_unaligned,
        "dbKeyDays": int(db_key_days),
        "judgedKeyDays": sum(counts.values()),
        "unjudgedKeyDays": unjudged_key_days,
        "judgedOffenders": int(judged_offenders),
        **counts,
    }
    return DiffResult(
        policy=policy,
        first_day=first_day,
        last_day=last_day,
        open_from=open_from,
        files=[str(f) for f in files],
        metrics_compared=metrics,
        days=days,
        counts=counts_out,
        offenders=offenders,
        problems=list(rollup.problems[: policy.sample_size]),
        without_ids={
            "export": dict(zip(METRICS, rollup.without_ids_totals, strict=True)),
            "db": dict(zip(METRICS, db_no_id_sums, strict=True)),
        },
        generated_at=datetime.now(UTC),
        unrecorded=unrecorded,
        renames=renames,
    )


def _tables_unrecorded_probe(con: Any) -> UnrecordedProbe:
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


def _sql_fails_all(
    metrics: Sequence[str],
    threshold: float,
    unrecorded: Mapping[date, Sequence[str]],
    e: str = "e_",
    d: str = "d_",
) -> str:
    """Any metric out of policy, over <e><m> / <d><m> columns; unrecorded day-metrics skipped."""
    parts = []
    for metric in metrics:
        rule = _sql_fails(metric, threshold).replace('"e_', f'"{e}').replace('"d_', f'"{d}')
        skip = [day for day, ms in unrecorded.items() if metric in ms]
        if skip:
            listed = ", ".join(f"DATE '{day.isoformat()}'" for day in sorted(skip))
            rule = f"(day NOT IN ({listed}) AND {rule})"
        parts.append(rule)
    return " OR ".join(parts) or "false"


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
    fails = _sql_fails_all(metrics, threshold, unrecorded, e="x_", d="y_")
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


def _write_detail(con: Any, path: Path, metrics: tuple[str, ...], rollup: DailyRollup) -> int:
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
        f"TO '{_esc(path)}' (FORMAT json, COMPRESSION gzip)"
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
