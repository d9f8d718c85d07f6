"""Runbook, Pre-Run Validation 2: smoke test authentication.

200 with a JSON body for the secret; 401 with a JSON error for every way of not
having it; and a refused request must not start ingestion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from cron_dryrun.evidence import format_transcripts
from cron_dryrun.exchange.record import RecordedRun, UsageRow
from cron_dryrun.rules.checks import (
    AuthCase,
    auth_cases,
    judge_auth_case,
    judge_rejections_wrote_nothing,
    judge_success_body,
    padded_secret_case,
)
from cron_dryrun.target import database as db
from cron_dryrun.target.client import CronClient, Transcript
from cron_dryrun.testing import DryRunState, Evidence, Target, fail_if

pytestmark = [pytest.mark.dryrun, pytest.mark.auth_smoke]

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "schemas" / "cron-response.schema.json").read_text()
)
# Case names do not depend on the secret's value, so they can name the parameters.
CASE_NAMES = [case.name for case in auth_cases("example-secret")]


def test_secret_is_accepted_with_a_json_body(cron_run: RecordedRun, evidence: Evidence) -> None:
    if cron_run.exchange is not None:
        evidence.attach("main exchange (curl -i)", format_transcripts(cron_run.exchange.attempts))
    fail_if(cron_run.problem)
    body = cron_run.require_exchange()
    validator = jsonschema.Draft202012Validator(SCHEMA)
    errors = [
        f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}"
        for e in validator.iter_errors(body)
    ]
    fail_if(judge_success_body(body, errors))


@dataclass
class Refusals:
    results: dict[str, tuple[AuthCase, Transcript]]
    changed_rows: tuple[UsageRow, ...]
    db_error: str | None


@pytest.fixture(scope="module")
def refusals(
    cron_client: CronClient, dryrun_target: Target, dryrun_state: DryRunState
) -> Iterator[Refusals]:
    """Send every case once, between two read-only looks at usage_events."""
    watch = None
    db_error = None
    try:
        watch = db.UsageWatch(dryrun_target.database_dsn)
    except Exception as exc:
        db_error = str(exc)
    results = {}
    for case in auth_cases(dryrun_target.secret):
        transcript = cron_client.send(
            f"auth negative: {case.name}", authorization=case.authorization
        )
        results[case.name] = (case, transcript)
    changed: tuple[UsageRow, ...] = ()
    if watch is not None:
        rows, _count = watch.written()
        changed = tuple(UsageRow(*row) for row in rows)
    yield Refusals(results, changed, db_error)


@pytest.mark.triggers_cron
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_refused_without_the_secret(case_name: str, refusals: Refusals, evidence: Evidence) -> None:
    case, transcript = refusals.results[case_name]
    evidence.attach(case.name, format_transcripts([transcript]))
    fail_if(judge_auth_case(case, transcript))


@pytest.mark.triggers_cron
def test_refused_requests_change_no_usage_rows(refusals: Refusals) -> None:
    fail_if(refusals.db_error and f"could not watch usage_events: {refusals.db_error}")
    fail_if(judge_rejections_wrote_nothing(refusals.changed_rows))


@pytest.mark.triggers_cron
def test_secret_padded_with_spaces_is_accepted(
    cron_client: CronClient, dryrun_target: Target, dryrun_state: DryRunState, evidence: Evidence
) -> None:
    case = padded_secret_case(dryrun_target.secret)
    transcript = cron_client.send(f"auth: {case.name}", authorization=case.authorization)
    evidence.attach(case.name, format_transcripts([transcript]))
    fail_if(judge_auth_case(case, transcript))
