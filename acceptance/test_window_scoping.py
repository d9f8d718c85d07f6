"""Runbook, 48-Hour Checklist 3: usage_events writes scoped to the expected window range.

Reads the rows the run inserted or updated (by xmin, read-only; no log access
needed): each is one UTC day starting on the run's previous or current day.
"""

from __future__ import annotations

import pytest

from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.rules.checks import judge_window_scoping, reported_writes
from cron_dryrun.testing import Evidence, fail_if

pytestmark = [pytest.mark.dryrun, pytest.mark.window_scoping]


def test_rows_written_only_in_the_daily_windows(cron_run: RecordedRun, evidence: Evidence) -> None:
    body = cron_run.require_exchange()
    observation = cron_run.require_db()
    telemetry = body.get("telemetry") if isinstance(body.get("telemetry"), dict) else {}
    reported, problem = reported_writes(telemetry)
    evidence.attach(
        f"rows written by the run ({len(observation.changed_rows)})",
        "\n".join(row.describe() for row in observation.changed_rows) or "(none)",
    )
    fail_if(problem)
    fail_if(judge_window_scoping(cron_run.run_at, observation, reported_writes=reported))
