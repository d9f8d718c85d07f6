"""The plugin as operators meet it: fail-fast configuration, deselection, concurrent evidence.

Runs go through ``run_suite`` (in this process); two suites at once need two processes."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from suite_runs import (
    ROOT,
    RunSuite,
    clean_env,
    recorded_files,
    run_acceptance,
    shared_server_args,
)

STAGING = "https://staging.cogni-track.app/api/cron/daily-usage"


def test_remote_target_without_database_url_fails_fast_naming_it(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    export = tmp_path / "export.csv"
    export.write_text("start_time\n")
    env = dict(CRON_URL=STAGING, CRON_SECRET="not-used", OPENAI_EXPORT=str(export))
    result = run_suite(f"--audit-dir={tmp_path / 'audit'}", env=env)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    lines = result.stderr.splitlines()
    assert lines[0].startswith(
        f"ERROR: cron-dryrun: the preflight against CRON_URL={STAGING} found "
    )
    assert (
        "  - DATABASE_URL is not set: export DATABASE_URL=postgres://... or pass --database-url "
        "(the staging database the cron writes to)"
    ) in lines
    assert (
        "Nothing was triggered. Fix every problem above, or unset CRON_URL to run on the local stack."
        in lines
    )


def test_remote_target_lists_every_missing_variable(run_suite: RunSuite, tmp_path: Path) -> None:
    result = run_suite(f"--audit-dir={tmp_path}", env={"CRON_URL": STAGING})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    for name in ("CRON_SECRET is not set", "DATABASE_URL is not set", "OPENAI_EXPORT is not set"):
        assert name in result.stderr


def test_rollback_check_is_deselected_without_allow_destructive(run_suite: RunSuite) -> None:
    result = run_suite(
        "--collect-only", "-q", command=[str(ROOT / "acceptance" / "test_rollback.py")]
    )
    pytest.LineMatcher(result.stdout.splitlines()).fnmatch_lines(["*1 deselected*"])


def test_two_suites_at_once_keep_both_entries_and_earlier_text(
    pg_server: Any, tmp_path: Path
) -> None:
    audit = tmp_path / "audit"
    summary = audit / "cron-dry-run" / "summary.md"
    summary.parent.mkdir(parents=True)
    earlier = "# Dry run summary\n\nOperator intro, kept verbatim.\n\n## Runs\n\n#### 2025-10-07T02:00:00Z — earlier run\n\n- Request: by hand\n"
    summary.write_text(earlier)
    env = clean_env()

    def one(label: str) -> subprocess.CompletedProcess[str]:
        return run_acceptance(
            f"--audit-dir={audit}",
            "--run-label",
            label,
            "-k",
            "not rerun and not refused",
            *shared_server_args(pg_server),
            env=env,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, ["suite A", "suite B"]))
    assert all("verdict:" in r.stdout for r in results), results[0].stdout[-2000:]
    text = summary.read_text()
    assert text.startswith("# Dry run summary\n\nOperator intro, kept verbatim.\n\n## Runs\n")
    assert text.count("— suite A") == 1 and text.count("— suite B") == 1
    assert text.endswith("#### 2025-10-07T02:00:00Z — earlier run\n\n- Request: by hand\n")
    assert len(list((audit / "cron-dry-run").glob("smoke-*.log"))) == 2
    ledger = (audit / "cron-dry-run" / "ledger.jsonl").read_text().splitlines()
    assert len(ledger) == 2


def test_rollback_check_runs_on_the_local_stack_with_allow_destructive(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    result = run_suite(
        "-q",
        "--allow-destructive",
        f"--audit-dir={tmp_path}",
        command=[str(ROOT / "acceptance" / "test_rollback.py")],
        shared_postgres=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout
    log = (tmp_path / "rollback_log.md").read_text()
    assert "DELETE FROM usage_events WHERE window_start >=" in log
    assert "- [ ] Cron schedule disabled in Vercel" in log


def test_staging_mode_runs_unchanged_against_a_remote_cron(
    run_suite: RunSuite, pg_server: Any, tmp_path: Path
) -> None:
    """CRON_URL + CRON_SECRET + DATABASE_URL + export: the suite targets them and provisions nothing."""
    from cron_dryrun.standin import start_local_stack
    from cron_dryrun.target.database import create_app_database

    app_dsn = create_app_database(pg_server.dsn)
    with start_local_stack(
        app_dsn, secret="staging-like-secret-42", export_dir=tmp_path / "exports"
    ) as stack:
        env = dict(
            CRON_URL=stack.cron_url,
            CRON_SECRET=stack.secret,
            DATABASE_URL=app_dsn,
            OPENAI_EXPORT=str(tmp_path / "exports"),
        )
        result = run_suite(f"--audit-dir={tmp_path / 'audit'}", env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"target: {stack.cron_url}" in result.stdout and "verdict: GO" in result.stdout
    gate = (tmp_path / "audit" / "gate.json").read_text()
    assert stack.cron_url in gate and "staging-like-secret-42" not in gate


def test_a_path_option_read_as_a_test_path_is_a_usage_error(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    from cron_dryrun.plugin import path_value_read_as_test_path

    existing = str(tmp_path)
    assert (
        path_value_read_as_test_path(["acceptance/", "--audit-dir", existing], ini_found=True)
        is None
    )
    assert (
        path_value_read_as_test_path(["--audit-dir", str(tmp_path / "new")], ini_found=False)
        is None
    )
    assert path_value_read_as_test_path(["--audit-dir", existing], ini_found=False) == (
        f"cron-dryrun: `--audit-dir {existing}` was read by pytest as a test path before the plugin was "
        f"loaded, so no ini file (markers, addopts) was found; write `--audit-dir={existing}` or set "
        f"AUDIT_DIR={existing}"
    )
    # no test path given: the only "path" pytest sees is the audit folder, so no ini is found
    result = run_suite("--collect-only", "-q", "--audit-dir", existing, command=[])
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert f"write `--audit-dir={existing}`" in result.stderr


def test_promotion_gate_needs_a_complete_ledger_of_remote_runs(
    run_suite: RunSuite, pg_server: Any, tmp_path: Path
) -> None:
    """Local-stack runs never count; a remote run with a green run of the same URL 24 h before does."""
    import json
    from datetime import UTC, datetime, timedelta

    from cron_dryrun.evidence import EvidenceWriter, Redactor
    from cron_dryrun.evidence.ledger import LedgerEntry
    from cron_dryrun.evidence.trust import record_run
    from cron_dryrun.standin import start_local_stack
    from cron_dryrun.target.database import create_app_database

    local = tmp_path / "local"
    ledger = local / "cron-dry-run" / "ledger.jsonl"
    ledger.parent.mkdir(parents=True)
    yesterday = LedgerEntry(
        time=datetime.now(UTC) - timedelta(hours=24), target="local stack", verdict="GO"
    )
    ledger.write_text(json.dumps(yesterday.to_json()) + "\n")
    alone = run_suite(f"--audit-dir={local}", "--promotion-gate", shared_postgres=True)
    assert alone.returncode == 1, alone.stdout[-3000:]
    gate = json.loads((local / "gate.json").read_text())
    assert gate["verdict"] == "NO-GO" and all(s["status"] == "passed" for s in gate["steps"])
    assert gate["reasons"] == [
        "promotion gate: the 48-hour dry run is not complete (not complete: runs on the local "
        "stack never count toward promotion; only complete runs against a remote CRON_URL do)"
    ]

    app_dsn = create_app_database(pg_server.dsn)
    paired = tmp_path / "paired"
    with start_local_stack(
        app_dsn, secret="promotion-secret-42", export_dir=tmp_path / "exports"
    ) as stack:
        # yesterday's run, recorded as a run records itself (chain, manifest): a hand-written
        # line would not count (tests/test_evidence_chain.py)
        day_one = LedgerEntry(
            time=datetime.now(UTC) - timedelta(hours=24),
            target=stack.cron_url + "/",
            verdict="GO",
            run_id="day-one",
        )
        record_run(EvidenceWriter(paired, Redactor([])), day_one)
        env = dict(
            CRON_URL=stack.cron_url,
            CRON_SECRET=stack.secret,
            DATABASE_URL=app_dsn,
            OPENAI_EXPORT=str(tmp_path / "exports"),
        )
        result = run_suite(f"--audit-dir={paired}", "--promotion-gate", env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "verdict: GO" in result.stdout and "dry run: complete" in result.stdout


def test_prerequisites_fail_naming_the_table_when_database_url_is_not_the_apps(
    run_suite: RunSuite, pg_server: Any, tmp_path: Path
) -> None:
    """A DATABASE_URL without the app's tables: the preflight stops the run, naming them."""
    import psycopg

    from cron_dryrun.standin import start_local_stack
    from cron_dryrun.target.database import create_app_database, database_name, with_database

    app_dsn = create_app_database(pg_server.dsn)
    empty = f"cron_dryrun_empty_{database_name(app_dsn)[-8:]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {empty}")
    with start_local_stack(
        app_dsn, secret="prereq-secret-1234", export_dir=tmp_path / "exports"
    ) as stack:
        env = dict(
            CRON_URL=stack.cron_url,
            CRON_SECRET=stack.secret,
            DATABASE_URL=with_database(pg_server.dsn, empty),
            OPENAI_EXPORT=str(tmp_path / "exports"),
        )
        result = run_suite(f"--audit-dir={tmp_path / 'audit'}", env=env)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-3000:]
    assert (
        "  - table usage_events does not exist in DATABASE_URL's database (the app's "
        "SCHEMA_MISSING condition): point DATABASE_URL at the app's database, or run the app's "
        "migrations first"
    ) in result.stderr.splitlines()
    assert "Nothing was triggered." in result.stderr
    assert recorded_files(tmp_path / "audit") == []  # no ledger, summary or gate.json
