"""Runbook, 48-Hour Checklist 2: record and judge the run's telemetry.

windowsProcessed is 2 x the OpenAI keys in provider_keys (the flag's daily
windows), no errors or failed keys, no blocking issue codes; throttling
headers go into the evidence. And every counter tells the truth (issue 27): the
counters agree with each other by the app's own arithmetic (rules.telemetry), and
storedEvents is the rows the exchange inserted, updatedEvents at least the rows it
updated, read by xmin against the read-only watermark, for the main exchange and the rerun.
"""

from __future__ import annotations

import json

import pytest

from cron_dryrun.config.settings import Settings
from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.rules.checks import judge_telemetry
from cron_dryrun.rules.telemetry import (
    OpenAIKey,
    WrittenRows,
    judge_counters_agree,
    judge_fallback_within_writes,
    judge_writes_counted,
    read_counters,
    windows_by_key,
)
from cron_dryrun.target import database as db
from cron_dryrun.target.client import CronClient
from cron_dryrun.testing import DryRunState, Evidence, Target, fail_if, rerun_once
from cron_dryrun.windows import daily_windows, naive_utc

pytestmark = [pytest.mark.dryrun, pytest.mark.telemetry]


def _writes_judged(run: RecordedRun, exchange: str) -> tuple[WrittenRows | None, list[str]]:
    """The rows the exchange inserted and updated, and the counters' failures against them."""
    if run.db is None or run.db.max_id_before is None:
        why = run.db_error or "no watermark was read before it"
        return None, [f"{exchange}: its writes could not be counted: {why}"]
    written = WrittenRows.split(run.db.changed_rows, run.db.max_id_before)
    assert run.body is not None
    counters = read_counters(run.body)
    judged = (
        judge_writes_counted(counters, written, exchange),
        judge_fallback_within_writes(counters, written, exchange),
    )
    return written, [m for m in judged if m]


def test_telemetry_matches_the_daily_windows(
    cron_run: RecordedRun,
    app_dsn: str,
    dryrun_settings: Settings,
    dryrun_state: DryRunState,
    evidence: Evidence,
) -> None:
    body = cron_run.require_exchange()
    with db.read_only(app_dsn) as conn:
        keys = cron_run.active_openai_keys
        if keys is None:
            keys = db.active_openai_keys(conn)
        openai_keys = [OpenAIKey(*k) for k in db.openai_keys(conn)]
    assert cron_run.exchange is not None
    throttling = cron_run.exchange.throttling_headers
    evidence.record("throttling_headers", throttling)
    judgement = judge_telemetry(
        body,
        keys,
        dryrun_settings.allow_issue_code,
        previous_manual_fallback_windows=dryrun_state.previous_manual_fallback_windows,
    )
    counters = read_counters(body)
    judgement.failures.extend(judge_counters_agree(counters))
    written, write_failures = _writes_judged(cron_run, "main exchange")
    judgement.failures.extend(write_failures)
    listing: dict[str, list[str]] = {}
    if written is not None:
        starts = [naive_utc(w.start) for w in daily_windows(cron_run.run_at)]
        listing, notes = windows_by_key(
            openai_keys,
            written.all,
            starts,
            counters.issues,
            counters.get("failedKeys"),
        )
        judgement.warnings.extend(notes)
    evidence.record("telemetry_warnings", judgement.warnings)
    evidence.record("windows_by_key", listing)
    evidence.attach(
        "telemetry",
        json.dumps(
            {
                "telemetry": body.get("telemetry"),
                "openai_keys": keys,
                "throttling_headers": throttling,
                "rows_written": None
                if written is None
                else {"inserted": len(written.inserted), "updated": len(written.updated)},
                "windows_by_key": listing,
                "warnings": judgement.warnings,
            },
            indent=2,
        ),
    )
    fail_if(judgement.message())


@pytest.mark.triggers_cron
def test_rerun_telemetry_counts_its_writes(
    cron_run: RecordedRun,
    cron_client: CronClient,
    dryrun_target: Target,
    dryrun_state: DryRunState,
    evidence: Evidence,
) -> None:
    cron_run.require_exchange()
    rerun = rerun_once(cron_client, dryrun_target, dryrun_state)
    fail_if(rerun.problem and f"the rerun's telemetry could not be judged: {rerun.problem}")
    assert rerun.body is not None
    failures = [f"idempotent rerun: {m}" for m in judge_counters_agree(read_counters(rerun.body))]
    written, write_failures = _writes_judged(rerun, "idempotent rerun")
    failures.extend(write_failures)
    evidence.attach(
        "rerun telemetry",
        json.dumps(
            {
                "telemetry": rerun.body.get("telemetry"),
                "rows_written": None
                if written is None
                else {"inserted": len(written.inserted), "updated": len(written.updated)},
            },
            indent=2,
        ),
    )
    fail_if("; ".join(failures) or None)
