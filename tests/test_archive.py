"""`cron-dryrun archive`: refused until the evidence is intact and the dry run complete; then the
counted runs' artefacts in one tar.gz with its .sha256, and one status bullet in the plan."""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time
from tampering import edit_file

from cron_dryrun.cli import main
from cron_dryrun.evidence import (
    EvidenceWriter,
    Redactor,
    smoke_log_relpath,
    stamp,
)
from cron_dryrun.evidence.ledger import LedgerEntry
from cron_dryrun.evidence.trust import record_run

TARGET = "https://staging.cogni-track.app/api/cron/daily-usage"
T1 = datetime(2025, 10, 7, 2, 0, 4, tzinfo=UTC)
T2 = T1 + timedelta(hours=24, minutes=3)

PLAN = """# Daily Usage Alignment Plan

### 1. Usage Ingestion Data Model
- **Confidence Target**: 8/10 once parity is proven.
  - Status 2025-10-06: schema reviewed (audit/schema.md, SHA256 {a})

### 2. Ingestion Window & Scheduling
- **Confidence Target**: 7/10 once staging rehearsal metrics are approved.
- **Pending evidence**: the summary's checkboxes must be complete before confidence is raised.
  - Status 2025-10-08 (night): smoke test recorded (audit/cron-dry-run/summary.md, SHA256 {b})
    continued on a second line by hand

Operator prose after the bullets, kept.

### 3. Dashboards
- **Confidence Target**: 6/10.
""".format(a="a" * 64, b="b" * 64)


def _run(writer: EvidenceWriter, when: datetime, verdict: str = "GO", target: str = TARGET) -> str:
    smoke = writer.write_new(smoke_log_relpath(when), f"### main exchange at {when}\n")
    entry = LedgerEntry(time=when, target=target, verdict=verdict, label="Dry run")
    record_run(writer, replace(entry, run_id=stamp(when)), [writer.relpath(smoke)])
    return writer.relpath(smoke)


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    root = tmp_path / "audit"
    writer = EvidenceWriter(root, Redactor([]))
    _run(writer, T1 - timedelta(hours=3), target="local stack")  # another target: not archived
    _run(writer, T1)
    return root


def test_refused_while_the_dry_run_is_not_complete(
    audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", f"--audit-dir={audit}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(
        f"archive: refused: the 48-hour dry run is not complete for {TARGET}: run 1 of 2"
    )
    assert not list(audit.rglob("archive-*"))


def test_refused_when_verify_evidence_fails(
    audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    smoke = _run(EvidenceWriter(audit, Redactor([])), T2)
    edit_file(audit / smoke, lambda _: "edited by hand\n")
    assert main(["archive", f"--audit-dir={audit}"]) == 1
    err = capsys.readouterr().err
    assert f"archive: verify-evidence: {smoke}: changed" in err
    assert "archive: refused: verify-evidence fails (" in err
    assert not list(audit.rglob("archive-*"))


def test_archives_every_artefact_of_the_counted_runs_with_its_checksum(
    audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = _run(EvidenceWriter(audit, Redactor([])), T2)
    assert main(["archive", f"--audit-dir={audit}"]) == 0
    name = f"archive-{stamp(T1)}-{stamp(T2)}.tar.gz"
    archive = audit / "cron-dry-run" / name
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert (audit / "cron-dry-run" / f"{name}.sha256").read_text() == f"{digest}  {name}\n"
    with tarfile.open(archive) as tar:
        members = sorted(tar.getnames())
    first = f"cron-dry-run/smoke-{stamp(T1)}.log"
    assert members == sorted(
        [
            "cron-dry-run/ledger.jsonl",
            first,
            f"{first}.sha256",
            second,
            f"{second}.sha256",
            f"manifests/{stamp(T1)}.sha256",
            f"manifests/{stamp(T2)}.sha256",
        ]
    )
    out = capsys.readouterr().out
    assert (
        f"archive: 7 file(s) of 2 counted run(s) -> {audit.as_posix()}/cron-dry-run/{name}" in out
    )
    assert f"archive: sha256 {digest}" in out
    assert main(["verify-evidence", f"--audit-dir={audit}"]) == 0
    assert main(["archive", f"--audit-dir={audit}"]) == 1  # never replaces an archive
    assert "already exists: these runs were archived before" in capsys.readouterr().err


@freeze_time(T2 + timedelta(hours=2))  # the bullet is dated by the clock: pinned
def test_memorybank_gets_one_dated_bullet_under_the_cron_section_and_nothing_else(
    audit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(EvidenceWriter(audit, Redactor([])), T2)
    plan = tmp_path / "daily_usage_alignment_plan.md"
    plan.write_text(PLAN)
    assert main(["archive", f"--audit-dir={audit}", f"--memorybank={plan}"]) == 0
    after = plan.read_text().splitlines()
    before = PLAN.splitlines()
    added = [line for line in after if line not in before]
    assert len(after) == len(before) + 1 and len(added) == 1
    assert after.index(added[0]) == before.index("    continued on a second line by hand") + 1
    assert [line for line in after if line != added[0]] == before
    name = f"archive-{stamp(T1)}-{stamp(T2)}.tar.gz"
    digest = hashlib.sha256((audit / "cron-dry-run" / name).read_bytes()).hexdigest()
    assert added[0] == (
        f"  - Status 2025-10-08 (cron dry run): 48-hour staging dry run complete against {TARGET} "
        "(runs 2025-10-07T02:00Z GO, 2025-10-08T02:03Z GO; parity passed on every counted run); "
        f"artefacts archived ({audit.as_posix()}/cron-dry-run/{name}, SHA256 {digest})"
    )
    out = capsys.readouterr().out
    assert f"{plan}:12: added: - Status 2025-10-08 (cron dry run)" in out
    assert (
        f"{plan}:8: raising the confidence is your decision; the line to edit: "
        "- **Confidence Target**: 7/10 once staging rehearsal metrics are approved."
    ) in out


def test_a_plan_without_the_cron_section_is_an_error_naming_it(
    audit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(EvidenceWriter(audit, Redactor([])), T2)
    plan = tmp_path / "plan.md"
    text = PLAN.replace("### 2. Ingestion Window & Scheduling", "### 2. Scheduling")
    plan.write_text(text)
    assert main(["archive", f"--audit-dir={audit}", f"--memorybank={plan}"]) == 1
    assert capsys.readouterr().err == (
        f"archive: refused: --memorybank {plan}: the plan has no section "
        "'### 2. Ingestion Window & Scheduling': add that heading (the cron's section) or pass "
        "the right file with --memorybank; the plan was not changed\n"
    )
    assert plan.read_text() == text
    assert not list(audit.rglob("archive-*"))


def test_a_bad_dry_run_start_is_a_usage_error_naming_the_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["archive", "--audit-dir", str(tmp_path), "--dry-run-start", "monday"]) == 2
    assert capsys.readouterr().err == (
        "archive: --dry-run-start / DRY_RUN_START: expected an ISO time like "
        "2025-10-07T02:00:00Z (got 'monday')\n"
    )
