"""Runbook, Post-Run Verification 1: "Compare totals with OpenAI exports" (the parity diff).

The run's windows are reconciled against the OpenAI usage export: yesterday's UTC day
is judged, today's (still open) is reported and not judged. Policy and report:
``cron_dryrun.parity``; the check and ``cron-dryrun diff`` call the same entry point
(``parity.engine.run_parity``).

The report JSON goes through the evidence writer (redacted, atomic, never overwriting);
the compressed detail side file is streamed by DuckDB straight next to it, under a name
reserved before the diff runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cron_dryrun.config.settings import Settings
from cron_dryrun.evidence.html_report import offenders_html
from cron_dryrun.parity.db_reader import reader_choice
from cron_dryrun.parity.engine import ParityRequest, run_parity
from cron_dryrun.parity.report import detail_path_for, reserve_report
from cron_dryrun.parity.rules import Policy, chart_days, summary_line
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
    request = ParityRequest(
        openai_exports,
        app_dsn,
        planned,
        Policy(threshold=dryrun_settings.parity_threshold),
        first_day=yesterday,
        last_day=today,
        open_from=today,
        db_reader=reader_choice(),  # ADBC, else COPY csv: the report says
    )
    try:
        outcome = run_parity(request)
    except BaseException:
        detail_path_for(planned).unlink(missing_ok=True)  # only the empty reservation
        raise
    report = writer.write_new(writer.relpath(planned), outcome.report_text())
    if report != planned:  # only if something else wrote that exact name meanwhile
        raise AssertionError(f"parity report {planned} was taken; written as {report}")
    result, judgement = outcome.result, outcome.judgement
    evidence.attach("parity diff", outcome.summary())
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
    fail_if(outcome.failure())
