"""A second trigger inside the same windows updates rows and never duplicates them.

The runbook triggers the cron every 24 h over overlapping windows; this proves
the overlap is harmless. Runs after the read-only checks (it triggers the cron).
"""

from __future__ import annotations

import pytest

from cron_dryrun.evidence import format_transcripts
from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.rules.checks import judge_rerun
from cron_dryrun.target import database as db
from cron_dryrun.target.client import CronClient
from cron_dryrun.testing import DryRunState, Evidence, Target, fail_if, rerun_once

pytestmark = [pytest.mark.dryrun, pytest.mark.idempotent_rerun, pytest.mark.triggers_cron]


def test_rerun_updates_and_never_duplicates(
    cron_run: RecordedRun,
    cron_client: CronClient,
    dryrun_target: Target,
    dryrun_state: DryRunState,
    evidence: Evidence,
) -> None:
    cron_run.require_exchange()
    rerun = rerun_once(cron_client, dryrun_target, dryrun_state)
    if rerun.exchange is not None:
        evidence.attach("rerun exchange (curl -i)", format_transcripts(rerun.exchange.attempts))
    fail_if(rerun.problem and f"the rerun could not be judged: {rerun.problem}")
    observation = rerun.require_db()
    with db.read_only(dryrun_target.database_dsn) as conn:
        duplicates = db.duplicate_bucket_keys(conn)
    assert rerun.body is not None
    fail_if(
        judge_rerun(
            rerun.body, observation.row_count_before, observation.row_count_after, duplicates
        )
    )
