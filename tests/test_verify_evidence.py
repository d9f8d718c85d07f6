"""``cron-dryrun verify-evidence``: exit status and messages, asserted line by line."""

from __future__ import annotations

from pathlib import Path

import pytest
from tampering import edit_file

from cron_dryrun.cli import main
from cron_dryrun.evidence import EvidenceWriter, Redactor, write_manifest


@pytest.fixture
def audit(tmp_path: Path) -> Path:
    writer = EvidenceWriter(tmp_path / "audit", Redactor([]))
    smoke = writer.write_text(
        "cron-dry-run/smoke-20251008T020004Z.log", "### main\n> POST / HTTP/1.1\n"
    )
    diff = writer.write_json(
        "telemetry-audit/2025-10-08T02-00-04Z-cron-diff.json", {"mismatched": []}
    )
    write_manifest(writer, "20251008T020004Z", [smoke, diff])
    report = writer.write_text("report-20251009T020000Z.html", "<html></html>")
    write_manifest(writer, "20251009T020000Z", [report])
    return writer.audit_dir


def test_all_manifests_hold(audit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify-evidence", "--audit-dir", str(audit)]) == 0
    assert (
        capsys.readouterr().out
        == f"verify-evidence: OK: 3 file(s) in 2 manifest(s) unchanged under {audit}\n"
    )


def test_changed_and_missing_files_are_named(
    audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit_file(audit / "cron-dry-run/smoke-20251008T020004Z.log", lambda _: "edited by hand\n")
    (audit / "report-20251009T020000Z.html").unlink()
    assert main(["verify-evidence", "--audit-dir", str(audit)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert err[0].startswith(
        "verify-evidence: cron-dry-run/smoke-20251008T020004Z.log: changed "
        "(listed in manifests/20251008T020004Z.sha256; sha256 expected "
    )
    assert err[1] == (
        "verify-evidence: report-20251009T020000Z.html: missing (listed in manifests/20251009T020000Z.sha256)"
    )
    assert err[2] == f"verify-evidence: FAILED: 2 problem(s) in 2 manifest(s) under {audit}"


def test_a_malformed_manifest_line_is_a_problem(
    audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(audit / "manifests/20251009T020000Z.sha256", "a") as handle:
        handle.write("not-a-hash  x\n")
    assert main(["verify-evidence", "--audit-dir", str(audit)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "verify-evidence: manifests/20251009T020000Z.sha256 line 2: not a sha256sum line: 'not-a-hash  x'"
    )


def test_nothing_to_verify_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify-evidence", "--audit-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        f"verify-evidence: no manifests in {tmp_path / 'manifests'}: nothing to verify"
    )


def test_a_missing_audit_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify-evidence", "--audit-dir", str(tmp_path / "nope")]) == 2
    assert (
        capsys.readouterr().err
        == f"verify-evidence: {tmp_path / 'nope'} is not a directory (--audit-dir)\n"
    )


def test_default_audit_dir_is_audit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(audit.parent)
    monkeypatch.delenv("AUDIT_DIR", raising=False)
    assert main(["verify-evidence"]) == 0
    assert capsys.readouterr().out.endswith("unchanged under audit\n")


def test_a_checksum_file_sits_beside_each_artefact(audit: Path) -> None:
    beside = audit / "cron-dry-run/smoke-20251008T020004Z.log.sha256"
    digest, name = beside.read_text().split()
    assert name == "smoke-20251008T020004Z.log" and len(digest) == 64


def test_an_artefact_archived_without_its_manifest_is_still_checked(
    audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # archives often keep the artefact and its .sha256, not the run's manifest
    (audit / "manifests/20251008T020004Z.sha256").unlink()
    edit_file(audit / "cron-dry-run/smoke-20251008T020004Z.log", lambda _: "edited by hand\n")
    assert main(["verify-evidence", "--audit-dir", str(audit)]) == 1
    assert (
        "cron-dry-run/smoke-20251008T020004Z.log: changed "
        "(listed in cron-dry-run/smoke-20251008T020004Z.log.sha256)"
    ) in capsys.readouterr().err
