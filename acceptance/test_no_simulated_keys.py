"""Runbook, Post-Run Verification: no simulatedKeyCount (app: simulatedKeys) entries in telemetry."""

from __future__ import annotations

import pytest

from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.rules.checks import judge_no_simulated_keys
from cron_dryrun.testing import fail_if

pytestmark = [pytest.mark.dryrun, pytest.mark.no_simulated_keys]


def test_no_simulated_keys_reported(cron_run: RecordedRun) -> None:
    fail_if(judge_no_simulated_keys(cron_run.require_exchange()))
