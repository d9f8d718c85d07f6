"""Runbook, 48-Hour Checklist 2: record and judge the run's telemetry.

windowsProcessed is 2 x the OpenAI keys in provider_keys (the flag's daily
windows), no errors or failed keys, no blocking issue codes; throttling
headers go into the evidence.
"""

from __future__ import annotations

import json

import pytest

from cron_dryrun.config.settings import Settings
from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.rules.checks import judge_telemetry
from cron_dryrun.target import database as db
from cron_dryrun.testing import DryRunState, Evidence, fail_if

pytestmark = [pytest.mark.dryrun, pytest.mark.telemetry]


def test_telemetry_matches_the_daily_windows(
    cron_run: RecordedRun,
    app_dsn: str,
    dryrun_settings: Settings,
    dryrun_state: DryRunState,
    evidence: Evidence,
) -> None:
    body = cron_run.require_exchange()
    keys = cron_run.active_openai_keys
    if keys is None:
        with db.read_only(app_dsn) as conn:
            keys = db.active_openai_keys(conn)
    assert cron_run.exchange is not None
    throttling = cron_run.exchange.throttling_headers
    evidence.record("throttling_headers", throttling)
    judgement = judge_telemetry(
        body,
        keys,
        dryrun_settings.allow_issue_code,
        previous_manual_fallback_windows=dryrun_state.previous_manual_fallback_windows,
    )
    evidence.record("telemetry_warnings", judgement.warnings)
    evidence.attach(
        "telemetry",
        json.dumps(
            {
                "telemetry": body.get("telemetry"),
                "openai_keys": keys,
                "throttling_headers": throttling,
                "warnings": judgement.warnings,
            },
            indent=2,
        ),
    )
    fail_if(judgement.message())
