"""Tampering shows and operators' bytes are kept: one real run, then edits verify-evidence must catch."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from suite_runs import clean_env, run_acceptance, shared_server_args
from tampering import edit_file

from cron_dryrun.cli import main
from cron_dryrun.evidence import (
    EvidenceWriter,
    Redactor,
    RunFacts,
    render_notes,
    run_block,
)
from cron_dryrun.target.pg_server import RunningPostgres

OPERATOR_SUMMARY = (
    "# Daily Usage Cron Dry-Run Summary\n\n## Purpose\n\nHand-written.\n\n## Runs\n"
    "<!-- Append newest entries to the top of this section. -->\n\n"
    "#### 2025-10-08T20:04Z (Smoke Test)\n"
    '- Request: `curl -i -H "Authorization: Bearer $CRON_SECRET" https://staging.example/api/cron/daily-usage`\n'
    "- Notes: password=hunter2 in the old runbook, Bearer abcdefghijklmnop\n"
)


@pytest.fixture(scope="module")
def audit_run(pg_server: RunningPostgres, tmp_path_factory: pytest.TempPathFactory) -> Path:
    audit = tmp_path_factory.mktemp("integrity") / "audit"
    (audit / "cron-dry-run").mkdir(parents=True)
    (audit / "cron-dry-run" / "summary.md").write_text(OPERATOR_SUMMARY)
    result = run_acceptance(f"--audit-dir={audit}", *shared_server_args(pg_server), env=clean_env())
    assert result.returncode == 0, result.stdout[-3000:]
    return audit


@pytest.fixture
def audit(audit_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "audit"
    shutil.copytree(audit_run, copy)
    return copy


def verify(audit: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["verify-evidence", "--audit-dir", str(audit)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def the(audit: Path, pattern: str) -> Path:
    (found,) = audit.glob(pattern)
    return found


def test_a_run_lists_every_write_once_artefact_and_verifies(
    audit: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate = json.loads((audit / "gate.json").read_text())
    run_id = gate["run_id"]
    manifest = (audit / "manifests" / f"{run_id}.sha256").read_text()
    for listed in (
        the(audit, "cron-dry-run/smoke-*.log"),
        the(audit, "telemetry-audit/*-cron-diff.json"),
        the(audit, "telemetry-audit/*-cron-diff.detail.jsonl.gz"),
        audit / f"gate-{run_id}.json",
    ):
        assert f"  {listed.relative_to(audit).as_posix()}\n" in manifest
    for block in ("cron-dry-run/summary.md", "cron-dry-run/notes-", "cron-dry-run/ledger.jsonl"):
        assert f"  {block}" in manifest and f"#run={run_id}" in manifest
    code, out = verify(audit, capsys)
    assert code == 0, out


def test_operator_bytes_stay_byte_for_byte(audit: Path) -> None:
    """Only what the suite writes is redacted: `Bearer $CRON_SECRET` and the rest stay as typed."""
    summary = (audit / "cron-dry-run" / "summary.md").read_text()
    run_id = json.loads((audit / "gate.json").read_text())["run_id"]
    block = run_block(summary, run_id)
    assert block is not None
    assert summary.replace(block + "\n", "", 1) == OPERATOR_SUMMARY


def test_no_lock_file_is_left_in_the_audit_folder(audit: Path) -> None:
    assert not [p for p in audit.rglob("*") if p.name.endswith(".lock")]


def test_summary_notes_and_gate_link_this_runs_own_report(audit: Path) -> None:
    report = the(audit, "report-*.html").name
    gate = json.loads((audit / "gate.json").read_text())
    assert gate["artefacts"]["report"] == report
    summary = (audit / "cron-dry-run" / "summary.md").read_text()
    notes = the(audit, "cron-dry-run/notes-*.md").read_text()
    for text in (summary, notes):
        assert f"[HTML report](../{report})" in text and "(../report.html)" not in text


def _flip_json_field(text: str, field: str) -> str:
    """The same JSON document with `field` (top level or under `telemetry`) set to another value."""
    data = json.loads(text)
    holder = data if field in data else data["telemetry"]
    old = holder[field]
    if isinstance(old, bool) or not isinstance(old, int | str):
        raise AssertionError(f"test setup: {field} is {old!r}, not a number or a verdict")
    holder[field] = old + 1 if isinstance(old, int) else ("NO-GO" if old == "GO" else "GO")
    return json.dumps(data, sort_keys=True)


def _in_run_block(text: str, run_id: str, edit: Callable[[str], str]) -> str:
    """Edit only inside the run's own block (what verify-evidence hashes), whatever the day's data."""
    block = run_block(text, run_id)
    assert block is not None, f"test setup: no block of run {run_id}"
    return text.replace(block, edit(block), 1)


def _bump_first_number(label: str) -> Callable[[str], str]:
    """Add one to the first number after `label` on the block's line that holds it (the summary
    follows the operator's own style, so the label's markup is not fixed)."""

    def edit(block: str) -> str:
        lines = block.split("\n")
        for i, line in enumerate(lines):
            if label in line:
                number = re.compile(r"\d+").search(line, line.index(label))
                assert number is not None, f"test setup: no number in {line!r}"
                bumped = str(int(number.group()) + 1)
                lines[i] = line[: number.start()] + bumped + line[number.end() :]
                return "\n".join(lines)
        raise AssertionError(f"test setup: no line with {label!r} in the block")

    return edit


def _run_id(audit: Path) -> str:
    return str(json.loads((audit / "gate.json").read_text())["run_id"])


def _flip_diff(audit: Path) -> str:
    diff = the(audit, "telemetry-audit/*-cron-diff.json")
    edit_file(diff, lambda text: _flip_json_field(text, "verdict"))
    return f"{diff.relative_to(audit).as_posix()}: changed"


def _delete_detail(audit: Path) -> str:
    detail = the(audit, "telemetry-audit/*.detail.jsonl.gz")
    detail.unlink()
    (audit / f"{detail.relative_to(audit)}.sha256").unlink()
    assert not detail.exists()
    return f"{detail.relative_to(audit).as_posix()}: missing"


def _flip_gate(audit: Path) -> str:
    edit_file(audit / "gate.json", lambda text: _flip_json_field(text, "verdict"))
    return "gate.json: changed (it differs from gate-"


def _edit_summary_entry(audit: Path) -> str:
    run_id = _run_id(audit)
    edit = _bump_first_number("Windows processed")
    edit_file(audit / "cron-dry-run" / "summary.md", lambda t: _in_run_block(t, run_id, edit))
    return "cron-dry-run/summary.md: the block of run "


def _edit_notes_block(audit: Path) -> str:
    run_id = _run_id(audit)
    notes = the(audit, "cron-dry-run/notes-*.md")
    edit = _bump_first_number("Windows processed")
    edit_file(notes, lambda t: _in_run_block(t, run_id, edit))
    return f"{notes.relative_to(audit).as_posix()}: the block of run "


def _edit_ledger_line(audit: Path) -> str:
    """Change the run's own stored-events count, parsed from its line: any day's count differs."""
    run_id = _run_id(audit)
    ledger = audit / "cron-dry-run" / "ledger.jsonl"

    def edit(text: str) -> str:
        lines = text.splitlines(keepends=True)
        (at,) = [i for i, line in enumerate(lines) if json.loads(line).get("run_id") == run_id]
        lines[at] = _flip_json_field(lines[at], "storedEvents") + "\n"
        return "".join(lines)

    edit_file(ledger, edit)
    return "cron-dry-run/ledger.jsonl: the block of run "


@pytest.mark.parametrize(
    "tamper",
    [
        _flip_diff,
        _delete_detail,
        _flip_gate,
        _edit_summary_entry,
        _edit_notes_block,
        _edit_ledger_line,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_verify_evidence_catches_each_edit(
    audit: Path, capsys: pytest.CaptureFixture[str], tamper: Callable[[Path], str]
) -> None:
    expected = tamper(audit)
    code, out = verify(audit, capsys)
    assert code == 1 and expected in out, out


def test_the_detail_file_is_the_gzip_the_manifest_hashed(audit: Path) -> None:
    with gzip.open(the(audit, "telemetry-audit/*.detail.jsonl.gz"), "rt") as handle:
        handle.read()  # a real gzip stream, not an empty reservation


# -- the writer on its own ------------------------------------------------------------------------


def test_a_pre_made_lock_symlink_is_never_followed_or_created(tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    (audit / "cron-dry-run").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    for name in (".summary.md.lock", ".ledger.jsonl.lock"):
        (audit / "cron-dry-run" / name).symlink_to(outside)
    writer = EvidenceWriter(audit, Redactor([]))
    writer.update_locked("cron-dry-run/summary.md", lambda old: old + "entry\n")
    writer.append_jsonl_locked("cron-dry-run/ledger.jsonl", {"a": 1})
    assert not outside.exists()
    assert (audit / "cron-dry-run" / "summary.md").read_text() == "entry\n"
    assert sorted(
        p.name for p in (audit / "cron-dry-run").iterdir() if p.name.endswith(".lock")
    ) == [
        ".ledger.jsonl.lock",
        ".summary.md.lock",
    ]  # the operator's links are left as they were, and no new lock file appears


def test_a_summary_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    (audit / "cron-dry-run").mkdir(parents=True)
    outside = tmp_path / "elsewhere.md"
    outside.write_text("not evidence\n")
    (audit / "cron-dry-run" / "summary.md").symlink_to(outside)
    writer = EvidenceWriter(audit, Redactor([]))
    with pytest.raises(Exception, match="is a symlink; the evidence writer does not follow links"):
        writer.update_locked("cron-dry-run/summary.md", lambda old: old + "entry\n")
    assert outside.read_text() == "not evidence\n"


def facts(run_id: str) -> RunFacts:
    return RunFacts(
        run_at=datetime(2026, 12, 4, 6, 59, 0, tzinfo=UTC),
        label="Dry run",
        target="https://staging.example/api/cron/daily-usage",
        method="POST",
        request="POST ... -> 200 OK",
        windows_processed=8,
        expected_windows=8,
        stored_events=1,
        updated_events=0,
        issues_by_code={},
        throttling_headers={},
        manual_fallback={},
        flag_state="true",
        verdict="GO",
        run_id=run_id,
    )


def test_notes_blocks_of_runs_in_the_same_second_are_all_kept() -> None:
    text = None
    for run_id in ("20261204T065900Z-aaaaaa", "20261204T065900Z-bbbbbb", "20261204T065900Z-cccccc"):
        text = render_notes(facts(run_id), text)
    assert text is not None
    for run_id in ("aaaaaa", "bbbbbb", "cccccc"):
        assert text.count(f"<!-- cron-dryrun:run 20261204T065900Z-{run_id} -->") == 1
    again = render_notes(replace(facts("20261204T065900Z-bbbbbb"), verdict="NO-GO"), text)
    assert again.count("<!-- cron-dryrun:run ") == 3  # a rerun of one run id replaces its block


def test_a_folder_under_the_audit_root_that_is_a_symlink_is_never_written_through(
    tmp_path: Path,
) -> None:
    """The issue's attack: audit/cron-dry-run a link to another folder. On main the ledger,
    summary, notes and smoke log were written through it, outside the audit folder."""
    audit = tmp_path / "audit"
    audit.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (audit / "cron-dry-run").symlink_to(outside, target_is_directory=True)
    writer = EvidenceWriter(audit, Redactor([]))
    for write in (
        lambda: writer.append_jsonl_locked("cron-dry-run/ledger.jsonl", {"a": 1}),
        lambda: writer.write_text("cron-dry-run/summary.md", "entry\n"),
        lambda: writer.new_path("cron-dry-run/smoke-20261207T000000Z.log"),
        lambda: writer.write_new("cron-dry-run/notes-2026-12-07.md", "notes\n"),
    ):
        with pytest.raises(Exception, match="cron-dry-run: is a symlink; the evidence writer"):
            write()
    assert list(outside.iterdir()) == []


def test_crlf_line_endings_of_the_operators_summary_are_kept(tmp_path: Path) -> None:
    """On main every CRLF outside the run's block became LF."""
    from cron_dryrun.evidence import add_summary_entry

    audit = tmp_path / "audit"
    (audit / "cron-dry-run").mkdir(parents=True)
    crlf = OPERATOR_SUMMARY.replace("\n", "\r\n").encode()
    (audit / "cron-dry-run" / "summary.md").write_bytes(crlf)
    entry = add_summary_entry(EvidenceWriter(audit, Redactor([])), facts("20261204T065900Z-crlf01"))
    after = (audit / "cron-dry-run" / "summary.md").read_bytes()
    assert after != crlf
    # the entry (and the blank line the insertion adds) removed, the operator's bytes remain
    assert after.replace(entry.encode() + b"\n", b"", 1) == crlf
