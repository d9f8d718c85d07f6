"""Runs refused before anything is sent (exit 4), whatever the invocation looks like
(issue 23): pytest-xdist started without the word "acceptance" on the command line, and a
symbolic link under the audit folder that the evidence would be written through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from suite_runs import ROOT, clean_env, run_acceptance

XDIST_REFUSED = (
    "ERROR: cron-dryrun: the acceptance suite cannot run under pytest-xdist (-n / --dist / -p "
    "xdist): the cron must be triggered once per run and every check judges that one exchange, "
    "but each xdist worker would trigger it again and write its own verdict. Nothing was "
    "triggered. Drop -n (or pass -p no:xdist)."
)


def test_xdist_started_from_inside_the_acceptance_folder_is_refused(tmp_path: Path) -> None:
    """`cd acceptance && pytest -n 2 .`: on main every worker triggered the cron and pytest
    exited 0 with no verdict."""
    audit = tmp_path / "audit"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", ".", "-p", "no:cacheprovider",
         f"--audit-dir={audit}"],
        cwd=ROOT / "acceptance", env=clean_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert XDIST_REFUSED in result.stderr.splitlines()
    assert not audit.exists()  # nothing written, nothing triggered


def test_an_xdist_worker_is_refused_whatever_its_arguments(tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    result = run_acceptance(
        f"--audit-dir={audit}", env=clean_env(PYTEST_XDIST_WORKER="gw0"), timeout=120
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert XDIST_REFUSED in result.stderr.splitlines()
    assert not audit.exists()


def test_a_symlinked_folder_under_the_audit_root_is_refused_by_the_preflight(
    tmp_path: Path,
) -> None:
    """audit/cron-dry-run a link to another folder: on main the ledger, summary, notes and
    smoke log were written through it, outside the audit folder."""
    audit = tmp_path / "audit"
    audit.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (audit / "cron-dry-run").symlink_to(elsewhere, target_is_directory=True)
    result = run_acceptance(f"--audit-dir={audit}", env=clean_env(), timeout=300)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert (
        f"  - {audit / 'cron-dry-run'} is a symbolic link (to {elsewhere}): the suite never "
        "writes through links under the audit folder; replace it with a real folder or file, "
        "or pass another --audit-dir / AUDIT_DIR"
    ) in result.stderr.splitlines()
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in audit.iterdir()) == ["cron-dry-run"]  # nothing else written
