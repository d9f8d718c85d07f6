"""Runbook, Pre-Run Validation 3: flags.enableDailyUsageWindows === true in the response."""

from __future__ import annotations

import pytest

from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.rules.checks import judge_flag
from cron_dryrun.testing import Evidence, fail_if

pytestmark = [pytest.mark.dryrun, pytest.mark.flag_state]


def test_flag_enable_daily_usage_windows_is_true(cron_run: RecordedRun, evidence: Evidence) -> None:
    body = cron_run.require_exchange()
    flags = body.get("flags")
    found = (
        "missing"
        if not isinstance(flags, dict) or "enableDailyUsageWindows" not in flags
        else flags["enableDailyUsageWindows"]
    )
    evidence.record("flag_state", found)
    fail_if(judge_flag(body))
