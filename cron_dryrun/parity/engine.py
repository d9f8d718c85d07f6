"""The parity engine's one entry point: a request in, the result, its verdict and its report out.

``cron-dryrun diff`` and the parity check (acceptance/test_parity.py) both call
``run_parity``: the engine claims the export the preflight staged, hands the request to
pipeline.reconcile (the database's totals read, ADBC else COPY csv, while the export is;
then the comparison), and judges the result (rules.judge). Where the report goes and
how it is written stays the caller's: the command writes it exclusively where the operator
said, the check through the evidence writer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cron_dryrun.parity.duck import claim_stage
from cron_dryrun.parity.pipeline import reconcile
from cron_dryrun.parity.report import detail_path_for, report_dict, report_json
from cron_dryrun.parity.rules import (
    DiffResult,
    Judgement,
    Policy,
    Progress,
    failure_message,
    judge,
)


@dataclass(frozen=True)
class ParityRequest:
    """What to compare: the export files, the app database, the range, the policy, where the
    report will go (its compressed detail file is written next to it by the engine)."""

    exports: Sequence[Path]
    dsn: str = field(repr=False)
    report: Path
    policy: Policy = field(default_factory=Policy)
    first_day: date | None = None
    last_day: date | None = None
    open_from: date | None = None  # that day and later are reported, not judged
    db_reader: str = "auto"  # auto | adbc | copy-csv (db_reader.reader_choice)
    # waits for a suspended database when a connection is due (cli.options.waker); None:
    # the caller already knows it answers (the run's preflight woke it)
    wake: Callable[[], int] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ParityOutcome:
    """The diff result, its verdict, and the report to write at ``report``."""

    result: DiffResult
    judgement: Judgement
    report: Path

    @property
    def passed(self) -> bool:
        return self.judgement.passed

    def report_data(self) -> dict[str, Any]:
        return report_dict(self.result, self.report)

    def report_text(self) -> str:
        return report_json(self.report_data())

    def summary(self) -> str:
        return terminal_summary(self.result, self.report)

    def failure(self) -> str | None:
        """The failure message naming the report; None when parity holds."""
        return None if self.passed else failure_message(self.result, self.report)


def run_parity(
    request: ParityRequest, *, progress: Progress | None = None, now: datetime | None = None
) -> ParityOutcome:
    """Reconcile the export with the database and judge it. Raises OSError/ValueError for an
    unreadable export or range, the driver's error for the database."""
    from cron_dryrun.parity.db_reader import UsageReader

    # the export as the preflight staged it (read once per run); files changed since, or
    # never staged (``cron-dryrun diff``), are read here
    stage = claim_stage()
    reader = UsageReader(request.dsn, request.db_reader, wake=request.wake)
    try:
        result = reconcile(
            request.exports,
            reader,
            first_day=request.first_day,
            last_day=request.last_day,
            open_from=request.open_from,
            policy=request.policy,
            detail_path=detail_path_for(request.report),
            progress=progress,
            now=now,
            unrecorded_probe=reader.unrecorded,
            stage=stage,
        )
    finally:
        if stage is not None:
            stage.db.close()  # duck.StageDatabase: the stage is done with
    return ParityOutcome(result, judge(result), request.report)


def terminal_summary(result: DiffResult, report: Path) -> str:
    """One screen: verdict, range, per-day table, counts, where the report is."""
    judgement = judge(result)
    counts = result.counts
    lines = [
        f"parity diff: {judgement.verdict.upper()}  "
        f"(threshold {result.policy.threshold * 100:g} %, {result.first_day} .. {result.last_day})",
        f"{'day':<11} {'judged':<7} {'key-days':>9} {'mismatch':>8} {'miss DB':>8} {'miss exp':>8} "
        f"{'export out tok':>15} {'db out tok':>15}",
    ]
    for d in result.days[:14]:
        keys = sum(d.key_days.values())
        lines.append(
            f"{d.day.isoformat():<11} {'yes' if d.judged else 'no':<7} {keys:>9} "
            f"{d.key_days['mismatched']:>8} {d.key_days['missingInDb']:>8} "
            f"{d.key_days['missingInCsv']:>8} {d.export['output_tokens']:>15} {d.db['output_tokens']:>15}"
        )
    if len(result.days) > 14:
        lines.append(f"... {len(result.days) - 14} more days in the report")
    for d in result.days:
        if not d.judged:
            lines.append(f"not judged {d.day.isoformat()}: {d.reason}")
    lines.append(
        f"export rows {counts['exportRows']} (bad {counts['exportBadRows']}, without ids {counts['exportRowsWithoutIds']}, "
        f"empty buckets {counts['exportEmptyBucketRows']}, outside range {counts['exportRowsOutsideRange']}); "
        f"db rows {counts['dbRows']} (without ids {counts['dbRowsWithoutIds']}, unaligned {counts['dbUnalignedRows']})"
    )
    reader = f"database read: {result.db_reader}"
    if result.db_reader_fallback:
        reader += f" (ADBC not used: {result.db_reader_fallback})"
    lines.append(reader)
    lines.extend(f"warning: {w}" for w in judgement.warnings)
    lines.append(f"report: {report}")
    if result.detail_path:
        lines.append(f"detail: {result.detail_path} ({result.detail_lines} lines)")
    lines.append(f"elapsed: {result.elapsed_seconds:.2f} s")
    return "\n".join(lines)
