"""Runbook, Prerequisites: secrets and export at hand, a safe target, the app's schema in place.

Each miss is a failure naming the variable or column, never a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cron_dryrun.checks import judge_exports_present, judge_target_scheme, judge_window_columns
from cron_dryrun.database import read_only, usage_events_columns
from cron_dryrun.plugin import Target, fail_if
from cron_dryrun.settings import Settings, is_loopback_url

pytestmark = [pytest.mark.dryrun, pytest.mark.prerequisites]


def test_remote_run_has_secret_database_and_export(dryrun_settings: Settings) -> None:
    # On the local stack the stack provides all three; against staging each must be given.
    fail_if("; ".join(dryrun_settings.missing_remote_configuration()))


def test_target_uses_https(dryrun_target: Target) -> None:
    fail_if(judge_target_scheme(dryrun_target.cron_url, is_loopback_url(dryrun_target.cron_url)))


def test_openai_export_is_readable(openai_exports: tuple[Path, ...]) -> None:
    # with --openai-usage=api: the pages fetched from the usage API (a refusal errors here)
    fail_if(judge_exports_present(str(p) for p in openai_exports))


def test_database_answers_and_usage_events_has_window_columns(
    dryrun_target: Target, app_dsn: str
) -> None:
    fail_if(dryrun_target.db_wake_error)
    with read_only(app_dsn) as conn:
        columns = usage_events_columns(conn)
    fail_if(judge_window_columns(columns))
