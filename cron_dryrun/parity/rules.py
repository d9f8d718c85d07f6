"""The parity judging rule (pure): policy, findings, the diff result and its verdict.

Policy (the runbook's defaults, contract.md section 6):

- a key x day present on one side only fails;
- a token metric whose relative delta ``(db - export) / max(export, 1)`` exceeds the
  threshold (default 0.02) fails, per key-day and in total;
- ``num_model_requests`` must match exactly;
- a day the export does not fully cover, or the run's still-open day, is reported
  and not judged;
- rows without project, key and user ids are counted and reported, never compared;
- bad export rows fail the check by default and are never added to a total.

No I/O here (the "judging rules do no I/O" contract): ``metric_findings`` and ``judge``,
and the same rule as SQL text for the comparison at scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cron_dryrun.parity.formats import (
    EXACT_METRICS,
    METRICS,
    DayKey,
    ExportProblem,
    export_file_message,
)

if TYPE_CHECKING:
    pass


SAMPLE_SIZE = 50


TOTALS_LISTED = 3  # total findings named in the reasons; the report lists them all


Progress = Callable[[str], None]


def quiet(_message: str) -> None:
    """The Progress that says nothing (defined here, a leaf: no stage calls back up to it)."""


@dataclass(frozen=True)
class Policy:
    threshold: float = 0.02
    bad_rows_fail: bool = True
    sample_size: int = SAMPLE_SIZE

    def __post_init__(self) -> None:
        if not 0 < self.threshold < 1:
            raise ValueError(f"parity threshold must be in (0, 1), got {self.threshold!r}")


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


def sql_fails(metric: str, threshold: float) -> str:
    """metric_findings' rule in SQL, over e_<m> / d_<m> columns (same float operations)."""
    e, d = f'coalesce("e_{metric}", 0)', f'coalesce("d_{metric}", 0)'
    if metric in EXACT_METRICS:
        return f"({e} <> {d})"
    return f"(abs(CAST({d} - {e} AS DOUBLE) / greatest({e}, 1)) > {threshold!r})"


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
    counts = result.counts
    warnings = tuple(result.warnings())
    if counts["exportBadRows"] and result.policy.bad_rows_fail:
        files = [p for p in result.problems if p.kind == "file"]
        overlaps = [p for p in result.problems if p.kind == "overlap"]
        rows = [p for p in result.problems if p.kind == "row"]
        reasons.extend(export_file_message(p) for p in files)
        reasons.extend(f"export file {p.file} {p.reason}" for p in overlaps)
        n_rows = counts["exportBadRows"] - len(files) - len(overlaps)
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
        n = counts[kind] - (renamed if kind != "mismatched" else 0)
        if n > 0:
            reason = f"{n} {'more ' if renamed and kind != 'mismatched' else ''}{text}"
            if kind == "missingInDb" and counts["dbUnalignedRows"]:
                reason += "; " + unaligned_hint(counts["dbUnalignedRows"])
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
    counts = result.counts
    days = ", ".join(d.isoformat() for d in result.judged_days) or "none"
    return (
        f"parity {judgement.verdict.upper()}: judged {days}; {counts['judgedKeyDays']} key-days, "
        f"{counts['mismatched']} mismatched, {counts['missingInDb']} missing in DB, "
        f"{counts['missingInCsv']} missing in export, {counts['exportBadRows']} bad export rows "
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


def sql_fails_any(
    metrics: Sequence[str],
    threshold: float,
    unrecorded: Mapping[date, Sequence[str]],
    e: str = "e_",
    d: str = "d_",
) -> str:
    """Any metric out of policy, over <e><m> / <d><m> columns; unrecorded day-metrics skipped."""
    parts = []
    for metric in metrics:
        rule = sql_fails(metric, threshold).replace('"e_', f'"{e}').replace('"d_', f'"{d}')
        skip = [day for day, ms in unrecorded.items() if metric in ms]
        if skip:
            listed = ", ".join(f"DATE '{day.isoformat()}'" for day in sorted(skip))
            rule = f"(day NOT IN ({listed}) AND {rule})"
        parts.append(rule)
    return " OR ".join(parts) or "false"
