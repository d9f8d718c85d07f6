"""Runs refused before anything is sent (exit 4), whatever the invocation looks like
(issue 23): pytest-xdist started without the word "acceptance" on the command line, and a
symbolic link under the audit folder that the evidence would be written through."""

from __future__ import annotations

from pathlib import Path

import pytest
from suite_runs import ROOT, RunSuite

XDIST_REFUSED = (
    "ERROR: cron-dryrun: the acceptance suite cannot run under pytest-xdist (-n / --dist / -p "
    "xdist): the cron must be triggered once per run and every check judges that one exchange, "
    "but each xdist worker would trigger it again and write its own verdict. Nothing was "
    "triggered. Drop -n (or pass -p no:xdist)."
)


def test_xdist_started_from_inside_the_acceptance_folder_is_refused(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    """`cd acceptance && pytest -n 2 .`: on main every worker triggered the cron and pytest
    exited 0 with no verdict."""
    audit = tmp_path / "audit"
    result = run_suite("-n", "2", f"--audit-dir={audit}", cwd=ROOT / "acceptance", command=["."])
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert XDIST_REFUSED in result.stderr.splitlines()
    assert not audit.exists()  # nothing written, nothing triggered


def test_an_xdist_worker_is_refused_whatever_its_arguments(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    audit = tmp_path / "audit"
    result = run_suite(f"--audit-dir={audit}", env={"PYTEST_XDIST_WORKER": "gw0"})
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert XDIST_REFUSED in result.stderr.splitlines()
    assert not audit.exists()


def test_a_symlinked_folder_under_the_audit_root_is_refused_by_the_preflight(
    run_suite: RunSuite,
    tmp_path: Path,
) -> None:
    """audit/cron-dry-run a link to another folder: on main the ledger, summary, notes and
    smoke log were written through it, outside the audit folder."""
    audit = tmp_path / "audit"
    audit.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (audit / "cron-dry-run").symlink_to(elsewhere, target_is_directory=True)
    result = run_suite(f"--audit-dir={audit}")
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert (
        f"  - {audit / 'cron-dry-run'} is a symbolic link (to {elsewhere}): the suite never "
        "writes through links under the audit folder; replace it with a real folder or file, "
        "or pass another --audit-dir / AUDIT_DIR"
    ) in result.stderr.splitlines()
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in audit.iterdir()) == ["cron-dry-run"]  # nothing else written


@pytest.mark.parametrize("value", ["bypass-value-0123456789\n", "bypass-\x1bvalue-0123456789"])
def test_a_bypass_secret_that_cannot_be_a_header_is_refused_unquoted(
    run_suite: RunSuite, tmp_path: Path, value: str
) -> None:
    """On main a bypass secret ending in a newline passed the preflight; the request then failed
    locally and a complete NO-GO line advised raising --cron-timeout."""
    export = tmp_path / "export.csv"
    export.write_text("start_time\n")
    env = dict(
        CRON_URL="https://staging.example.app/api/cron/daily-usage",
        CRON_SECRET="a-long-random-cron-secret-0123",
        OPENAI_EXPORT=str(export),
        VERCEL_AUTOMATION_BYPASS_SECRET=value,
    )
    result = run_suite(f"--audit-dir={tmp_path / 'audit'}", env=env)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    problem = (
        "  - VERCEL_AUTOMATION_BYPASS_SECRET has leading or trailing whitespace (often a newline "
        "read from a file or `echo`): strip it"
        if value.endswith("\n")
        else "  - VERCEL_AUTOMATION_BYPASS_SECRET contains a control character (code 27) at "
        "position 8: a header value must be printable ASCII"
    )
    assert problem in result.stderr.splitlines()
    assert "bypass-value" not in result.stdout + result.stderr
    assert not (tmp_path / "audit" / "cron-dry-run").exists()
