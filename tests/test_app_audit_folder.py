"""The suite as a guest in the app's own audit folder (contract.md section 7.1).

fixtures/app-audit/ has the shape of the app repository's `audit/`: a hand-written
summary.md (checklist, `## Runs` with the app's entries, `### Pending Artefacts`, a
fields reference) and `notes-template.md`. A run adds its entry at the top of `## Runs` in
the same form and changes no other byte; the day's notes follow the template.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from suite_runs import ROOT, clean_env, run_acceptance, shared_server_args
from tampering import edit_file, replace_once

from cron_dryrun.cli import main
from cron_dryrun.evidence import (
    FACTS_END,
    FACTS_START,
    EvidenceWriter,
    Redactor,
    RunFacts,
    add_summary_entry,
    run_block,
    summary_entry_style,
    update_notes,
)
from cron_dryrun.target.pg_server import RunningPostgres
from tests.test_evidence import facts


def record_run(writer: EvidenceWriter, run: RunFacts) -> None:
    """What the run's finish (session.finish._write_run_files) writes into the audit folder
    for a run: its summary entry, then its notes block, through the same functions."""
    add_summary_entry(writer, run)
    update_notes(writer, run)


FIXTURE = ROOT / "fixtures" / "app-audit"
SUMMARY = Path("cron-dry-run") / "summary.md"
APP_HEADING = re.compile(r"^#### \d{4}-\d\d-\d\dT\d\d:\d\dZ \(.+\)$")
APP_BULLETS = (
    "- Request: ",
    "- Windows processed: ",
    "- Updated events: ",
    "- Issues by code: ",
    "- Retry-After headers: ",
    "- Notes: ",
    "- Artefacts: ",
)
TEMPLATE_LABELS = (
    "Run timestamp (UTC)", "Trigger mode", "Feature flag state", "Windows processed",
    "Updated events", "Issues by code", "Retry-After headers", "Manual fallback usage",
    "Notable logs", "Parity diff result", "Follow-ups",
)  # fmt: skip


def app_audit(tmp_path: Path) -> Path:
    audit = tmp_path / "audit"
    shutil.copytree(FIXTURE, audit)
    return audit


def new_entry(before: str, after: str) -> str:
    """The entry a run added: everything else must be byte for byte what was there."""
    # the newest entry already there: an app heading, or the run marker of a suite entry
    top = re.search(r"^(#### |<!-- cron-dryrun:run )", before, re.M)
    assert top is not None
    cut = top.start()
    assert after.startswith(before[:cut]), "bytes before the runs changed"
    assert after.endswith(before[cut:]), "bytes after the new entry changed"
    return after[cut : len(after) - len(before[cut:])]


def assert_app_form(entry: str) -> None:
    lines = [line for line in entry.splitlines() if not line.startswith("<!-- cron-dryrun:")]
    assert APP_HEADING.match(lines[0]), lines[0]
    assert [line[: len(b)] for line, b in zip(lines[1:8], APP_BULLETS, strict=True)] == list(
        APP_BULLETS
    )


def test_the_fixture_is_in_the_apps_form() -> None:
    text = (FIXTURE / SUMMARY).read_text()
    assert summary_entry_style(text) == "app"
    assert text.count("- [ ] ") == 10  # seven checklist items, three pending artefacts
    assert "Bearer $CRON_SECRET" in text  # a shell variable an operator wrote, not a secret


def test_a_new_entry_goes_on_top_of_runs_and_nothing_else_changes(tmp_path: Path) -> None:
    audit = app_audit(tmp_path)
    before = (audit / SUMMARY).read_text()
    writer = EvidenceWriter(audit, Redactor(["matrix-Secret-7f3a9c1e5b"]))
    run = facts(run_at=datetime(2025, 10, 9, 2, 0, 4, tzinfo=UTC), label="Dry run 1",
                request="POST https://x/api -> 200 OK; token matrix-Secret-7f3a9c1e5b")  # fmt: skip
    record_run(writer, run)
    after = (audit / SUMMARY).read_text()
    entry = new_entry(before, after)
    assert_app_form(entry)
    assert entry.startswith("#### 2025-10-09T02:00Z (Dry run 1)\n- Request: POST https://x/api")
    assert "[REDACTED]" in entry and "matrix-Secret" not in after  # the suite's own text: redacted
    assert after.count("Bearer $CRON_SECRET") == 2  # the operators' text: not
    # a second run goes above the first, and still nothing else moves
    record_run(writer, facts(run_at=datetime(2025, 10, 10, 2, 0, tzinfo=UTC)))
    again = (audit / SUMMARY).read_text()
    second = new_entry(after, again)
    assert second.startswith("#### 2025-10-10T02:00Z (")


def test_notes_follow_the_template_and_keep_operator_comments(tmp_path: Path) -> None:
    audit = app_audit(tmp_path)
    writer = EvidenceWriter(audit, Redactor([]))
    at = datetime(2025, 10, 9, 2, 0, 4, tzinfo=UTC)
    record_run(writer, facts(run_at=at))
    notes_path = audit / "cron-dry-run" / "notes-2025-10-09.md"
    notes = notes_path.read_text()
    assert notes.startswith("# Daily Usage Cron Dry-Run Notes — 2025-10-09\n")
    for label in TEMPLATE_LABELS:
        assert f"- **{label}**: " in notes, label
    assert "[" + "YYYY" not in notes and "- **Windows processed**: 8 (expected 8)" in notes
    assert "- **Run timestamp (UTC)**: 2025-10-09T02:00:04Z" in notes
    assert notes.rstrip().endswith("Additional context / operator comments:\n- [ ] \n- [ ] \n- [ ]")
    # the operator ticks a box and writes a comment; the same day's rerun keeps both
    commented = notes.replace("- [ ] \n", "- [x] checked the diff by hand\n", 1)
    commented += "Operator: the 02:00 run was late because of a deploy.\n"
    notes_path.write_text(commented)
    record_run(writer, facts(run_at=at.replace(hour=3), label="Dry run 2"))
    rerun = notes_path.read_text()
    assert rerun.count("<!-- cron-dryrun:run ") == 2
    assert rerun.index("Run 2025-10-09T03:00:04Z") < rerun.index("Run 2025-10-09T02:00:04Z")
    after_facts = rerun.split(FACTS_END, 1)[1]
    assert after_facts == commented.split(FACTS_END, 1)[1]  # byte for byte
    assert rerun.split(FACTS_START, 1)[0] == commented.split(FACTS_START, 1)[0]


def test_without_a_template_the_built_in_layout_stays(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path / "audit", Redactor([]))
    record_run(writer, facts(run_at=datetime(2025, 10, 9, 2, tzinfo=UTC)))
    notes = (tmp_path / "audit" / "cron-dry-run" / "notes-2025-10-09.md").read_text()
    assert "## Operator comments" in notes and "**Trigger mode**" not in notes


def test_entries_with_a_run_id_are_framed_for_the_manifest(tmp_path: Path) -> None:
    """The app-form entry sits between the run's markers (invisible HTML comments), so its
    manifest can hash exactly its bytes; a second run goes above the first."""
    audit = app_audit(tmp_path)
    before = (audit / SUMMARY).read_text()
    writer = EvidenceWriter(audit, Redactor([]))
    first = facts(run_at=datetime(2025, 10, 9, 2, 0, 4, tzinfo=UTC), run_id="20251009T020004Z-a1")
    written = add_summary_entry(writer, first)
    after = (audit / SUMMARY).read_text()
    assert run_block(after, "20251009T020004Z-a1") == written
    assert new_entry(before, after) == written + "\n"
    assert written.startswith(
        "<!-- cron-dryrun:run 20251009T020004Z-a1 -->\n#### 2025-10-09T02:00Z"
    )
    second = replace(first, run_at=first.run_at.replace(hour=3), run_id="20251009T030004Z-b2")
    add_summary_entry(writer, second)
    again = (audit / SUMMARY).read_text()
    assert_app_form(new_entry(after, again))
    assert again.index("20251009T030004Z-b2") < again.index("20251009T020004Z-a1")


def test_template_notes_blocks_are_keyed_by_run_id(tmp_path: Path) -> None:
    audit = app_audit(tmp_path)
    writer = EvidenceWriter(audit, Redactor([]))
    at = datetime(2025, 10, 9, 2, 0, 4, tzinfo=UTC)
    for run_id in ("20251009T020004Z-aaaaaa", "20251009T020004Z-bbbbbb"):  # the same second
        update_notes(writer, facts(run_at=at, run_id=run_id))
    notes = (audit / "cron-dry-run" / "notes-2025-10-09.md").read_text()
    for run_id in ("20251009T020004Z-aaaaaa", "20251009T020004Z-bbbbbb"):
        block = run_block(notes, run_id)
        assert block is not None and "- **Trigger mode**: " in block
    assert notes.count("Additional context / operator comments:") == 1


# -- a real run of the suite into a copy of the fixture -------------------------------------------


@pytest.fixture(scope="module")
def guest_run(
    pg_server: RunningPostgres, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, dict[Path, bytes]]:
    """One suite run into a copy of the fixture: (the copy, summary.md before, other files)."""
    audit = app_audit(tmp_path_factory.mktemp("app-audit"))
    before = (audit / SUMMARY).read_text()
    untouched = {
        p.relative_to(audit): p.read_bytes()
        for p in audit.rglob("*")
        if p.is_file() and p.name != "summary.md"
    }
    # the local stack's database on the session's server (a fresh one), as the fault matrix
    result = run_acceptance(
        f"--audit-dir={audit}",
        "--run-label",
        "Dry run 1",
        *shared_server_args(pg_server),
        env=clean_env(),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return audit, before, untouched


@pytest.fixture
def guest(guest_run: tuple[Path, str, dict[Path, bytes]], tmp_path: Path) -> Path:
    copy = tmp_path / "audit"
    shutil.copytree(guest_run[0], copy)
    return copy


def verify(audit: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["verify-evidence", "--audit-dir", str(audit)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def run_id_of(audit: Path) -> str:
    run_id = json.loads((audit / "gate.json").read_text())["run_id"]
    assert isinstance(run_id, str)
    return run_id


@pytest.mark.slow
def test_a_suite_run_against_the_apps_audit_folder_is_a_good_guest(
    guest_run: tuple[Path, str, dict[Path, bytes]],
) -> None:
    audit, before, untouched = guest_run
    after = (audit / SUMMARY).read_text()
    entry = new_entry(before, after)
    assert_app_form(entry)
    run_id = run_id_of(audit)
    assert entry == f"{run_block(after, run_id)}\n"  # framed by the run's markers, nothing else
    assert "(Dry run 1)" in entry.splitlines()[1] and "```json" in entry
    for rel, data in untouched.items():
        assert (audit / rel).read_bytes() == data, rel
    (notes,) = (audit / "cron-dry-run").glob("notes-2*.md")
    text = notes.read_text()
    assert "- **Feature flag state**: flags.enableDailyUsageWindows true" in text
    assert "Additional context / operator comments:" in text
    assert run_block(text, run_id) is not None


@pytest.mark.slow
def test_verify_evidence_accepts_the_run_in_the_apps_folder(
    guest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = (guest / "manifests" / f"{run_id_of(guest)}.sha256").read_text()
    assert "  cron-dry-run/summary.md#run=" in manifest
    assert "  cron-dry-run/notes-" in manifest
    code, out = verify(guest, capsys)
    assert code == 0, out
    # the operators tick their checklist and write below the runs: still verifies
    summary = guest / SUMMARY
    edit_file(summary, replace_once("- [ ] Write down", "- [x] Write down"))
    (notes,) = (guest / "cron-dry-run").glob("notes-2*.md")
    edit_file(notes, lambda text: text + "Operator: checked by hand.\n")
    code, out = verify(guest, capsys)
    assert code == 0, out


@pytest.mark.slow
@pytest.mark.parametrize("what", ["summary entry", "notes block"])
def test_verify_evidence_catches_an_edit_of_the_new_entry_there(
    guest: Path, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    run_id = run_id_of(guest)
    if what == "summary entry":
        path = guest / SUMMARY
    else:
        (path,) = (guest / "cron-dry-run").glob("notes-2*.md")
    text = path.read_text()
    block = run_block(text, run_id)
    assert block is not None
    edited = re.sub(r"\(expected (\d+)\)", lambda m: f"(expected {int(m[1]) + 1})", block, count=1)
    edit_file(path, replace_once(block, edited))
    code, out = verify(guest, capsys)
    rel = path.relative_to(guest).as_posix()
    assert code == 1 and f"{rel}: the block of run {run_id}: changed" in out, out
