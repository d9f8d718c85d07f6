"""A GO the gate can stand behind: every collected check ran, one trigger, the intended target.

Each test runs the acceptance suite as an operator would, in this process (``run_suite``).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from suite_runs import RunSuite

from cron_dryrun.cli import main


def test_a_run_that_deselects_auth_cases_is_partial_and_no_go(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    """`--fault=auth-open -k "not refused"`: the open endpoint's refusal checks never ran."""
    audit = tmp_path / "audit"
    result = run_suite(
        f"--audit-dir={audit}", "--fault=auth-open", "-k", "not refused", shared_postgres=True
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    assert "verdict: NO-GO" in result.stdout
    assert re.search(r"!! auth_smoke +partial +partial:", result.stdout), result.stdout[-3000:]
    gate = result.gate
    assert gate["verdict"] == "NO-GO" and gate["partial"] is True
    auth = next(s for s in gate["steps"] if s["name"] == "auth_smoke")
    assert auth["status"] == "partial" and auth["reason"].endswith("more not run")
    not_run = [c["nodeid"] for c in gate["checks"] if c["status"] == "not-run"]
    assert "acceptance/test_auth_smoke.py::test_refused_requests_change_no_usage_rows" in not_run
    assert any("test_refused_without_the_secret[" in n for n in not_run)
    (line,) = result.ledger
    assert line["verdict"] == "NO-GO" and line["completeness"] == "partial"


def test_xdist_is_refused_before_anything_is_triggered(run_suite: RunSuite, tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    result = run_suite(f"--audit-dir={audit}", "-p", "xdist", "-n", "2")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert (
        "cron-dryrun: the acceptance suite cannot run under pytest-xdist (-n / --dist / -p xdist): "
        "the cron must be triggered once per run"
    ) in result.stderr
    assert not audit.exists()


@pytest.mark.parametrize(
    ("switch", "env"),
    [(("--require-staging",), {}), ((), {"CRON_DRYRUN_TARGET": "staging"})],
    ids=["--require-staging", "CRON_DRYRUN_TARGET=staging"],
)
def test_a_staging_run_never_falls_back_to_the_local_stack(
    run_suite: RunSuite, tmp_path: Path, switch: tuple[str, ...], env: dict[str, str]
) -> None:
    audit = tmp_path / "audit"
    result = run_suite(f"--audit-dir={audit}", *switch, env=env)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert (
        "ERROR: cron-dryrun: this run must target staging (--require-staging / "
        "CRON_DRYRUN_TARGET=staging, as tox -e staging sets), but CRON_URL is not set"
    ) in result.stderr
    assert "Nothing was triggered." in result.stderr
    assert not result.ledger


def test_tox_staging_requires_staging() -> None:
    from suite_runs import ROOT

    tox = (ROOT / "tox.ini").read_text()
    staging = tox.split("[testenv:staging]", 1)[1].split("\n[", 1)[0]
    assert "CRON_DRYRUN_TARGET = staging" in staging
    assert "--require-staging" in staging


def test_database_url_without_cron_url_needs_an_explicit_url_backend(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    """A DATABASE_URL alone (maybe staging's server) must not get scratch databases made on it."""
    audit = tmp_path / "audit"
    dsn = "postgresql://operator:pw@staging-db.invalid:5432/app"
    result = run_suite(f"--audit-dir={audit}", env={"DATABASE_URL": dsn})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert "ERROR: cron-dryrun: DATABASE_URL is set but CRON_URL is not" in result.stderr
    assert "pass --db-backend=url" in result.stderr and "Nothing was triggered." in result.stderr
    assert not result.ledger


def test_a_settings_error_names_a_bad_cron_dryrun_target(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    result = run_suite(f"--audit-dir={tmp_path}", env={"CRON_DRYRUN_TARGET": "prod"})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "CRON_DRYRUN_TARGET: expected staging (refuse the local stack) or auto" in result.stderr


# -- only real runs are recorded --------------------------------------------------------------------


def test_a_configuration_error_records_nothing_and_gate_json_shows_its_cause(
    run_suite: RunSuite,
    tmp_path: Path,
) -> None:
    """A missing variable must not add a NO-GO line that breaks a complete ledger."""
    audit = tmp_path / "audit"
    staging = "https://staging.cogni-track.app/api/cron/daily-usage"
    result = run_suite(f"--audit-dir={audit}", env={"CRON_URL": staging})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert not result.ledger
    assert not (audit / "cron-dry-run").exists()  # no summary entry, notes or smoke log
    gate = result.gate
    assert gate["verdict"] == "NO-GO"
    assert gate["reasons"] == [
        "configuration error: CRON_SECRET is not set: export CRON_SECRET=<staging secret> (env "
        "only); DATABASE_URL is not set: export DATABASE_URL=postgres://... or pass --database-url "
        "(the staging database the cron writes to); OPENAI_EXPORT is not set: pass --openai-export "
        "PATH (the OpenAI usage export CSV or a folder of them) or set OPENAI_EXPORT"
    ]
    assert {s["reason"] for s in gate["steps"]} == {
        "not run: the run stopped before anything was triggered"
    }


def test_collect_only_writes_nothing(run_suite: RunSuite, tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    result = run_suite(f"--audit-dir={audit}", "--collect-only")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "test_secret_is_accepted_with_a_json_body" in result.stdout
    assert not audit.exists()


def test_a_run_that_triggers_nothing_adds_no_ledger_line(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    """Only the prerequisites step selected: no request is sent, so nothing is recorded."""
    audit = tmp_path / "audit"
    result = run_suite(f"--audit-dir={audit}", "-k", "prerequisites", shared_postgres=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-2000:]
    assert "nothing was triggered: no ledger line" in result.stdout
    assert not result.ledger and not (audit / "cron-dry-run").exists()
    assert result.gate["verdict"] == "NO-GO"


# -- evidence is part of the verdict ----------------------------------------------------------------


def test_evidence_that_cannot_be_written_is_no_go_naming_the_files(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "cron-dry-run").write_text("a file where the folder should be\n")
    result = run_suite(f"--audit-dir={audit}", "-k", "not refused", shared_postgres=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    assert "verdict: NO-GO" in result.stdout
    gate = result.gate
    reason = gate["reasons"][-1]
    assert reason.startswith("evidence could not be written, so this run cannot be GO: ")
    for name in ("cron-dry-run/smoke-", "cron-dry-run/summary.md", "cron-dry-run/notes-"):
        assert name in reason
    assert "cron-dry-run/ledger.jsonl" in reason
    assert (audit / "cron-dry-run").read_text() == "a file where the folder should be\n"


def test_the_ledger_line_is_written_last_and_red_when_evidence_failed(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    """The summary cannot be written: the checks passed, yet the ledger gets no GO line."""
    audit = tmp_path / "audit"
    (audit / "cron-dry-run" / "summary.md").mkdir(parents=True)
    result = run_suite(f"--audit-dir={audit}", shared_postgres=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    (line,) = result.ledger
    assert line["verdict"] == "NO-GO" and line["failed_checks"] == ["evidence"]
    gate = result.gate
    assert all(s["status"] == "passed" for s in gate["steps"])
    assert gate["verdict"] == "NO-GO" and "cron-dry-run/summary.md" in gate["reasons"][-1]
    assert list((audit / "cron-dry-run").glob("smoke-*.log"))


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 KiB tmpfs: the audit folder on a disk that fills up during the run."""
    mount_point = tmp_path / "full-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_is_no_go_naming_it_and_never_a_go_ledger_line(
    run_suite: RunSuite, full_disk: Path
) -> None:
    audit = full_disk / "audit"
    result = run_suite(f"--audit-dir={audit}", shared_postgres=True)
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output[-3000:]
    assert "verdict: NO-GO" in result.stdout
    assert "evidence could not be written, so this run cannot be GO" in result.stdout
    assert "No space left on device" in result.stdout
    assert "Traceback" not in output
    assert "the HTML report could not be written into the audit folder" in result.stdout
    assert all(line["verdict"] == "NO-GO" for line in result.ledger)


def assert_verifies(audit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`cron-dryrun verify-evidence` over the folder, as an auditor runs it, passes."""
    capsys.readouterr()
    code = main(["verify-evidence", "--audit-dir", str(audit)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err


def test_the_summary_entry_never_says_go_when_a_later_file_made_the_run_no_go(
    run_suite: RunSuite,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The notes cannot be written (a folder where the day's notes file goes), after the summary
    entry was: the entry is rewritten with the NO-GO gate.json has, and still verifies."""
    audit = tmp_path / "audit"
    for day in {datetime.now(UTC).date(), (datetime.now(UTC) + timedelta(minutes=5)).date()}:
        (audit / "cron-dry-run" / f"notes-{day.isoformat()}.md").mkdir(parents=True)
    result = run_suite(f"--audit-dir={audit}", shared_postgres=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    gate = result.gate
    assert gate["verdict"] == "NO-GO" and "cron-dry-run/notes-" in gate["reasons"][-1]
    summary = (audit / "cron-dry-run" / "summary.md").read_text()
    entry = summary[summary.index("<!-- cron-dryrun:run ") :]
    assert "**NO-GO**" in entry and "**GO**" not in entry
    assert "evidence could not be written" in entry
    assert_verifies(audit, capsys)


def test_a_ledger_that_cannot_take_the_line_makes_the_run_no_go_everywhere(
    run_suite: RunSuite,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A folder where ledger.jsonl goes: known before the manifest, so the summary entry says
    NO-GO like gate.json (it said GO), the manifest lists no ledger line that never came, and
    the folder still verifies (the rewritten gate snapshot failed it)."""
    audit = tmp_path / "audit"
    (audit / "cron-dry-run" / "ledger.jsonl").mkdir(parents=True)
    result = run_suite(f"--audit-dir={audit}", shared_postgres=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    gate = result.gate
    assert gate["verdict"] == "NO-GO"
    assert "cron-dry-run/ledger.jsonl (IsADirectoryError" in gate["reasons"][-1]
    summary = (audit / "cron-dry-run" / "summary.md").read_text()
    entry = summary[summary.index("<!-- cron-dryrun:run ") :]
    assert "**NO-GO**" in entry and "**GO**" not in entry
    (manifest,) = (audit / "manifests").glob(f"{gate['run_id']}.sha256")
    assert "ledger.jsonl" not in manifest.read_text()
    assert_verifies(audit, capsys)
