"""Runbook, Post-Run Verification 1: "Compare totals with OpenAI exports" (the parity diff).

The run's windows are reconciled against the OpenAI usage export: yesterday's UTC day
is judged, today's (still open) is reported and not judged. Policy and report:
``cron_dryrun.parity.reconcile``; the same check runs without pytest as ``cron-dryrun diff``.

The report JSON goes through the evidence writer (redacted, atomic, never overwriting);
the compressed detail side file is streamed by DuckDB straight next to it, under a name
reserved before the diff runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cron_dryrun.cli.diff import terminal_summary
from cron_dryrun.config.settings import Settings
from cron_dryrun.evidence.html_report import offenders_html
from cron_dryrun.parity.db_reader import UsageReader, reader_choice
from cron_dryrun.parity.reconcile import (
    Policy,
    chart_days,
    detail_path_for,
    failure_message,
    judge,
    reconcile,
    report_dict,
    report_json,
    reserve_report,
    summary_line,
)
from cron_dryrun.parity.usage_totals import unrecorded_probe
from cron_dryrun.testing import fail_if
from cron_dryrun.windows import daily_windows

pytestmark = [pytest.mark.dryrun, pytest.mark.parity]


def test_db_totals_match_the_openai_export(
    dryrun_settings: Settings,
    app_dsn: str,
    openai_exports: tuple[Path, ...],
    cron_run: Any,
    evidence: Any,
) -> None:
    cron_run.require_exchange()  # no exchange, nothing the cron wrote to compare
    windows = daily_windows(cron_run.run_at)
    yesterday, today = windows[0].start.date(), windows[-1].start.date()
    writer = evidence.writer
    planned = reserve_report(writer.audit_dir, datetime.now(UTC))
    try:
        result = reconcile(
            openai_exports,
            UsageReader(app_dsn, reader_choice()),  # ADBC, else COPY csv: the report says
            first_day=yesterday,
            last_day=today,
            open_from=today,
            policy=Policy(threshold=dryrun_settings.parity_threshold),
            detail_path=detail_path_for(planned),
            unrecorded_probe=unrecorded_probe(app_dsn),
        )
    except BaseException:
        detail_path_for(planned).unlink(missing_ok=True)  # only the empty reservation
        raise
    report = writer.write_new(writer.relpath(planned), report_json(report_dict(result, planned)))
    if report != planned:  # only if something else wrote that exact name meanwhile
        raise AssertionError(f"parity report {planned} was taken; written as {report}")
    judgement = judge(result)
    evidence.attach("parity diff", terminal_summary(result, report))
    evidence.attach_html(offenders_html(result))
    evidence.record(
        "parity",
        {
            "verdict": judgement.verdict,
            "report": str(report),
            "summary": summary_line(result),
            "warnings": list(judgement.warnings),
            "days": chart_days(result),
        },
    )
    fail_if(None if judgement.passed else failure_message(result, report))
