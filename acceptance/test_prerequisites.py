"""Runbook, Prerequisites: secrets and export at hand, a safe target, the app's schema in place,
a writable audit folder.

Each check reports one area of the preflight (``cron_dryrun.session.preflight``). Against staging the
preflight ran before anything was sent, and a problem stopped the run there (exit 4); on the
local stack it runs once the stack is up. Each miss is a failure naming the variable, table or
path, never a skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cron_dryrun.config.settings import Settings
from cron_dryrun.session.preflight import Preflight, check_exports
from cron_dryrun.testing import Target, fail_if

pytestmark = [pytest.mark.dryrun, pytest.mark.prerequisites]


def test_remote_run_has_secret_database_and_export(dryrun_preflight: Preflight) -> None:
    # On the local stack the stack provides all three; against staging each must be given.
    fail_if("; ".join(dryrun_preflight.problems_in("configuration", "secret")))


def test_target_uses_https(dryrun_preflight: Preflight) -> None:
    fail_if("; ".join(dryrun_preflight.problems_in("target")))


def test_openai_export_is_readable(
    dryrun_preflight: Preflight, dryrun_settings: Settings, request: pytest.FixtureRequest
) -> None:
    if dryrun_settings.openai_usage == "api":
        # with --openai-usage=api: the pages fetched from the usage API (a refusal errors here),
        # checked as the preflight checks export files
        exports: tuple[Path, ...] = request.getfixturevalue("openai_exports")
        fail_if("; ".join(check_exports(list(exports))))
        return
    fail_if("; ".join(dryrun_preflight.problems_in("exports")))


def test_database_answers_and_usage_events_has_window_columns(
    dryrun_target: Target, dryrun_preflight: Preflight
) -> None:
    fail_if(dryrun_target.db_wake_error)
    fail_if("; ".join(dryrun_preflight.problems_in("database")))


def test_audit_folder_is_writable(dryrun_preflight: Preflight) -> None:
    fail_if("; ".join(dryrun_preflight.problems_in("audit folder")))
