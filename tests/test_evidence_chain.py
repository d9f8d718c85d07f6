"""Evidence that cannot be forged (issue 23): only the suite's own runs count, the ledger is a
hash chain, and with a key every line and manifest is signed.

Each test replays one attack from the issue on a folder written the way a run writes it
(``record_run``: the manifest, the chained line, the gate snapshot) and asserts that the
gate does not count it and that ``verify-evidence`` names it. The clock is pinned.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from freezegun import freeze_time

from cron_dryrun.cli import main
from cron_dryrun.evidence import (
    LEDGER_RELPATH,
    EvidenceWriter,
    Redactor,
    gate_snapshot_relpath,
    stamp,
)
from cron_dryrun.evidence.chain import (
    GENESIS,
    chained_line,
    key_id,
    ledger_lines,
    line_hash,
    walk,
)
from cron_dryrun.evidence.ledger import LedgerEntry
from cron_dryrun.evidence.trust import judge_ledger, record_run
from cron_dryrun.redaction import SECRET_VARIABLES, secrets_from_environment

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
TARGET = "https://staging.example.app/api/cron/daily-usage"
KEY = "evidence-key-for-the-tests-0123456789"
OTHER_KEY = "another-evidence-key-9876543210"


def real_run(audit: Path, at: datetime, verdict: str = "GO", key: str | None = None) -> str:
    """One run's evidence, written as finish.write_all writes it: smoke log, gate snapshot and
    gate.json, then the manifest and the chained ledger line under the ledger's lock."""
    writer = EvidenceWriter(audit, Redactor([KEY, OTHER_KEY]))
    run_id = f"{stamp(at)}-{verdict.lower()}"
    smoke = writer.write_new(f"cron-dry-run/smoke-{stamp(at)}.log", f"### main\n> POST {TARGET}\n")
    gate = {"verdict": verdict, "run_id": run_id, "run_at": at.isoformat()}
    snapshot = writer.write_json(gate_snapshot_relpath(run_id), gate)
    writer.write_json("gate.json", gate)
    entry = LedgerEntry(at, TARGET, verdict, run_id=run_id)
    record_run(writer, entry, [writer.relpath(smoke), writer.relpath(snapshot)], key=key)
    return run_id


def gate(
    audit: Path, capsys: pytest.CaptureFixture[str], *args: str, now: datetime = NOW
) -> tuple[int, list[str]]:
    with freeze_time(now):
        code = main(["gate", "--audit-dir", str(audit), "--target", TARGET, *args])
    captured = capsys.readouterr()
    return code, (captured.out + captured.err).splitlines()


def verify(audit: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["verify-evidence", "--audit-dir", str(audit), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def ledger(audit: Path) -> Path:
    return audit / LEDGER_RELPATH


def rewrite_lines(audit: Path, lines: list[str]) -> None:
    before = ledger(audit).read_bytes()
    ledger(audit).write_text("".join(line + "\n" for line in lines))
    assert ledger(audit).read_bytes() != before  # the edit changed the bytes


@pytest.fixture
def no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRON_DRYRUN_EVIDENCE_KEY", raising=False)


# -- the chain, pure ------------------------------------------------------------------------------


def test_the_first_line_chains_to_the_empty_string_and_each_next_to_the_one_before() -> None:
    first = chained_line({"a": 1}, None, None)
    second = chained_line({"a": 2}, first, None)
    assert json.loads(first)["prev"] == GENESIS == line_hash("")
    assert json.loads(second)["prev"] == line_hash(first)
    chain = walk([first, second])
    assert [link.in_chain for link in chain.links] == [True, True] and chain.problems == ()
    assert walk([second, first]).problems == (
        "ledger line 1: it is the first line but does not start the chain (lines before it "
        "were deleted?)",
    )


def test_a_signed_line_carries_the_keys_id_never_the_key() -> None:
    line = chained_line({"a": 1}, None, KEY)
    sig = json.loads(line)["sig"]
    assert sig["alg"] == "hmac-sha256" and sig["key"] == key_id(KEY) and len(sig["value"]) == 64
    assert KEY not in line


def test_old_unchained_lines_are_not_in_the_chain_and_new_lines_follow_them() -> None:
    old = json.dumps({"time": "2025-10-07T02:00:00Z", "target": TARGET, "verdict": "GO"})
    new = chained_line({"a": 1}, old, None)
    chain = walk([old, new])
    assert [link.in_chain for link in chain.links] == [False, True]
    assert chain.links[0].why_not == (
        "not in the chain: the line has no chain hash (written by hand, or before the chain)"
    )
    assert chain.problems == ()


# -- 1. only what the suite wrote counts ----------------------------------------------------------


def test_two_hand_written_lines_without_a_run_never_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    """The issue's first attack: on main the gate printed "complete ... covering 49h", exit 0."""
    audit = tmp_path / "audit"
    ledger(audit).parent.mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "version": 1,
                "time": (NOW - hours * H).isoformat(),
                "target": TARGET,
                "verdict": "GO",
                "completeness": "complete",
            }
        )
        for hours in (50, 25)
    ]
    ledger(audit).write_text("".join(line + "\n" for line in lines))
    code, out = gate(audit, capsys)
    assert code == 1
    why = "not in the chain: the line has no chain hash (written by hand, or before the chain)"
    assert f"  not counted: line 1 (no run id, 2026-12-05T10:00:00+00:00, GO): {why}" in out
    assert f"  not counted: line 2 (no run id, 2026-12-06T11:00:00+00:00, GO): {why}" in out
    assert not any(line.startswith("dry run") and "complete:" in line for line in out)


def test_chained_lines_without_a_run_id_or_a_manifest_never_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    audit = tmp_path / "audit"
    ledger(audit).parent.mkdir(parents=True)
    first = chained_line(LedgerEntry(NOW - 25 * H, TARGET, "GO").to_json(), None, None)
    forged = LedgerEntry(NOW - H, TARGET, "GO", run_id="20261207T110000Z-forged").to_json()
    second = chained_line(forged, first, None)
    ledger(audit).write_text(f"{first}\n{second}\n")
    code, out = gate(audit, capsys)
    assert code == 1
    assert out[-2:] == [
        "  not counted: line 1 (no run id, 2026-12-06T11:00:00Z, GO): no run id: not written by "
        "the suite",
        "  not counted: line 2 (run 20261207T110000Z-forged, 2026-12-07T11:00:00Z, GO): no manifest "
        "for run 20261207T110000Z-forged (manifests/20261207T110000Z-forged.sha256 is missing)",
    ]


def test_two_real_runs_a_day_apart_complete_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    audit = tmp_path / "audit"
    real_run(audit, NOW - 25 * H)
    real_run(audit, NOW - H)
    code, out = gate(audit, capsys)
    assert code == 0, out
    assert out[0].endswith("covering 48h since 2026-12-06T11:00Z")
    assert not [line for line in out if "not counted" in line]
    code, text = verify(audit, capsys)
    assert code == 0, text


def test_a_real_runs_line_copied_a_day_earlier_under_another_run_id_does_not_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    """The issue's second attack: on main both gate and verify-evidence exited 0."""
    audit = tmp_path / "audit"
    run_id = real_run(audit, NOW - H)
    (line,) = ledger_lines(ledger(audit).read_text())
    copy = json.loads(line)
    copy.update(time="2026-12-06T10:00:00Z", run_id="20261206T100000Z-go")
    rewrite_lines(audit, [line, json.dumps(copy, sort_keys=True, ensure_ascii=False)])
    code, out = gate(audit, capsys)
    assert code == 1
    assert out[-1] == (
        "  not counted: line 2 (run 20261206T100000Z-go, 2026-12-06T10:00:00Z, GO): not in the "
        "chain: the chain breaks at line 2"
    )
    code, text = verify(audit, capsys)
    assert code == 1
    assert (
        "verify-evidence: ledger line 2: it does not follow line 1: a line was deleted, inserted "
        "or reordered before it, or line 1 was edited"
    ) in text
    # the forger recomputes the chain hash: the chain holds, but no manifest vouches for the copy
    copy["prev"] = line_hash(line)
    rewrite_lines(audit, [line, json.dumps(copy, sort_keys=True, ensure_ascii=False)])
    code, out = gate(audit, capsys)
    assert code == 1
    assert out[-1].endswith(
        "no manifest for run 20261206T100000Z-go (manifests/20261206T100000Z-go.sha256 is missing)"
    )
    code, text = verify(audit, capsys)
    assert (
        code == 1
        and (
            "verify-evidence: ledger line 2: no manifest records it in the chain (not written by any "
            "run)"
        )
        in text
    )
    assert judge_ledger(audit).counted[0].run_id == run_id


# -- 2. the chain: deleted, inserted, reordered, edited -------------------------------------------


@pytest.fixture
def three_runs(tmp_path: Path, no_key: None) -> Path:
    audit = tmp_path / "audit"
    real_run(audit, NOW - 49 * H)
    real_run(audit, NOW - 30 * H, "NO-GO")
    real_run(audit, NOW - 25 * H)
    return audit


def test_a_deleted_red_line_and_its_manifest_are_named_and_block_the_gate(
    three_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's third attack, mid-ledger: the red run's line and manifest removed."""
    lines = ledger_lines(ledger(three_runs).read_text())
    red = json.loads(lines[1])["run_id"]
    (three_runs / "manifests" / f"{red}.sha256").unlink()
    (three_runs / gate_snapshot_relpath(red)).unlink()
    rewrite_lines(three_runs, [lines[0], lines[2]])
    code, text = verify(three_runs, capsys)
    assert code == 1
    assert "verify-evidence: ledger line 2: it does not follow line 1" in text
    code, out = gate(three_runs, capsys)
    assert code == 1
    assert out[0].endswith(
        "not complete: the ledger has 1 problem(s): "
        f"{ledger(three_runs)}: ledger line 2: it does not follow line 1: a line was deleted, "
        "inserted or reordered before it, or line 1 was edited"
    )
    assert out[-1].endswith("GO): not in the chain: the chain breaks at line 2")


def test_a_deleted_line_whose_manifest_stays_is_named_by_position(
    three_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ledger_lines(ledger(three_runs).read_text())
    red = json.loads(lines[1])["run_id"]
    rewrite_lines(three_runs, [lines[0], lines[2]])
    code, text = verify(three_runs, capsys)
    assert code == 1
    assert (
        f"verify-evidence: ledger line 2 (run {red}): deleted (manifests/{red}.sha256 records it; "
        "no line of the ledger has its SHA-256)"
    ) in text


def test_reordered_lines_are_named_with_their_positions(
    three_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ledger_lines(ledger(three_runs).read_text())
    last = json.loads(lines[2])["run_id"]
    rewrite_lines(three_runs, [lines[0], lines[2], lines[1]])
    code, text = verify(three_runs, capsys)
    assert code == 1
    assert f"verify-evidence: ledger line 2 (run {last}): moved from line 3" in text


def test_an_inserted_line_is_named(three_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ledger_lines(ledger(three_runs).read_text())
    hand = json.dumps({"time": "2026-12-06T00:00:00Z", "target": TARGET, "verdict": "GO"})
    rewrite_lines(three_runs, [lines[0], hand, lines[1], lines[2]])
    code, text = verify(three_runs, capsys)
    assert code == 1
    assert (
        "verify-evidence: ledger line 2: inserted (it carries no chain hash and follows chained "
        "lines)"
    ) in text


def test_an_edited_line_is_named(three_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Turning the red run green: its manifest and the next line's chain hash both object."""
    lines = ledger_lines(ledger(three_runs).read_text())
    red = json.loads(lines[1])["run_id"]
    rewrite_lines(three_runs, [lines[0], lines[1].replace('"NO-GO"', '"GO"'), lines[2]])
    code, text = verify(three_runs, capsys)
    assert code == 1
    assert (
        f"verify-evidence: ledger line 2 (run {red}): edited (its manifest manifests/{red}.sha256 "
        "records another SHA-256)"
    ) in text
    assert "verify-evidence: ledger line 3: it does not follow line 2" in text
    code, out = gate(three_runs, capsys)
    assert code == 1
    assert any(
        line.startswith(f"  not counted: line 2 (run {red}, ") and "does not verify" in line
        for line in out
    ), out


# -- 3. signatures --------------------------------------------------------------------------------


def test_the_evidence_key_is_a_secret_the_redactor_knows(tmp_path: Path) -> None:
    assert "CRON_DRYRUN_EVIDENCE_KEY" in SECRET_VARIABLES
    assert secrets_from_environment({"CRON_DRYRUN_EVIDENCE_KEY": KEY}) == (KEY,)
    audit = tmp_path / "audit"
    real_run(audit, NOW - H, key=KEY)
    for path in audit.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_require_signed_counts_signed_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = tmp_path / "audit"
    real_run(audit, NOW - 25 * H, key=KEY)
    real_run(audit, NOW - H, key=KEY)
    monkeypatch.setenv("CRON_DRYRUN_EVIDENCE_KEY", KEY)
    code, out = gate(audit, capsys, "--require-signed")
    assert code == 0, out
    code, text = verify(audit, capsys, "--require-signed")
    assert code == 0 and text.endswith("(signatures checked)\n"), text


def test_require_signed_refuses_unsigned_and_forged_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone with write access rebuilds a valid chain and manifests, but has no key."""
    monkeypatch.delenv("CRON_DRYRUN_EVIDENCE_KEY", raising=False)
    audit = tmp_path / "audit"
    first = real_run(audit, NOW - 25 * H)  # unsigned: written without the key
    second = real_run(audit, NOW - H, key=OTHER_KEY)  # signed with a key that is not the one
    code, _ = gate(audit, capsys)
    assert code == 0  # without --require-signed and without a key, both count
    monkeypatch.setenv("CRON_DRYRUN_EVIDENCE_KEY", KEY)
    code, out = gate(audit, capsys, "--require-signed")
    assert code == 1
    assert out[-2:] == [
        f"  not counted: line 1 (run {first}, 2026-12-06T11:00:00Z, GO): not signed",
        f"  not counted: line 2 (run {second}, 2026-12-07T11:00:00Z, GO): signed with key "
        f"{key_id(OTHER_KEY)}, not with CRON_DRYRUN_EVIDENCE_KEY (key {key_id(KEY)})",
    ]
    code, text = verify(audit, capsys, "--require-signed")
    assert code == 1
    assert "verify-evidence: ledger line 1: not signed" in text
    assert f"verify-evidence: manifests/{first}.sha256: not signed" in text


def test_a_tampered_signature_does_not_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = tmp_path / "audit"
    real_run(audit, NOW - 25 * H, key=KEY)
    run_id = real_run(audit, NOW - H, key=KEY)
    monkeypatch.setenv("CRON_DRYRUN_EVIDENCE_KEY", KEY)
    sig_file = audit / "manifests" / f"{run_id}.sha256.sig"
    sig = json.loads(sig_file.read_text())
    sig["value"] = "0" * 64
    sig_file.write_text(json.dumps(sig))
    code, out = gate(audit, capsys, "--require-signed")
    assert code == 1
    assert out[-1].endswith(f"the manifest of run {run_id}: signature does not verify")
    code, text = verify(audit, capsys)
    assert code == 1
    assert f"verify-evidence: manifests/{run_id}.sha256: signature does not verify" in text


def test_require_signed_without_the_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    audit = tmp_path / "audit"
    real_run(audit, NOW - H, key=KEY)
    code, out = gate(audit, capsys, "--require-signed")
    assert code == 2
    assert out == [
        "cron-dryrun gate: --require-signed needs CRON_DRYRUN_EVIDENCE_KEY in the environment "
        "(the key the runs were signed with; never a command-line argument)"
    ]


# -- 4. verify-evidence covers the whole folder ----------------------------------------------------


@pytest.fixture
def go_then_no_go(tmp_path: Path, no_key: None) -> tuple[Path, str, str]:
    audit = tmp_path / "audit"
    green = real_run(audit, NOW - 2 * H)
    red = real_run(audit, NOW - H, "NO-GO")
    return audit, green, red


def test_gate_json_edited_to_go_without_its_run_id_is_a_problem(
    go_then_no_go: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    audit, _, _ = go_then_no_go
    doc = json.loads((audit / "gate.json").read_text())
    doc["verdict"] = "GO"
    del doc["run_id"]
    (audit / "gate.json").write_text(json.dumps(doc))
    code, text = verify(audit, capsys)
    assert code == 1
    assert (
        "verify-evidence: gate.json: no run id, so no run vouches for it (edited by hand, or "
        "written by an older version: the next dry run writes it again)"
    ) in text


def test_an_older_runs_snapshot_copied_over_gate_json_is_a_problem(
    go_then_no_go: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    audit, green, red = go_then_no_go
    before = (audit / "gate.json").read_bytes()
    (audit / "gate.json").write_bytes((audit / gate_snapshot_relpath(green)).read_bytes())
    assert (audit / "gate.json").read_bytes() != before
    code, text = verify(audit, capsys)
    assert code == 1
    assert (
        f"verify-evidence: gate.json: is gate-{green}.json, but gate-{red}.json (run at "
        f"{(NOW - H).isoformat()}) is a later run's: gate.json must be the latest run's"
    ) in text


def test_the_latest_red_runs_line_and_manifest_deleted_leave_gate_json_unvouched(
    go_then_no_go: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    audit, _, red = go_then_no_go
    lines = ledger_lines(ledger(audit).read_text())
    rewrite_lines(audit, lines[:1])
    (audit / "manifests" / f"{red}.sha256").unlink()
    code, text = verify(audit, capsys)
    assert code == 1
    assert (
        f"verify-evidence: gate.json: names run {red}, but no manifest lists gate-{red}.json "
        f"(manifests/{red}.sha256 missing?)"
    ) in text
    assert f"verify-evidence: gate-{red}.json: not written by any run (no manifest lists it)" in (
        text
    )


def test_unlisted_files_warn_except_under_the_suites_own_names(
    go_then_no_go: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    audit, _, _ = go_then_no_go
    (audit / "operator-notes.txt").write_text("my own file\n")
    code, text = verify(audit, capsys)
    assert code == 0, text
    assert (
        "verify-evidence: warning: operator-notes.txt: not written by any run (no manifest "
        "lists it)\n"
    ) in text
    (audit / "report-20261207T000000Z.html").write_text("<html>verdict: GO</html>")
    (audit / "manifests" / "made-up.txt").write_text("x")
    code, text = verify(audit, capsys)
    assert code == 1
    assert (
        "verify-evidence: report-20261207T000000Z.html: not written by any run (no manifest "
        "lists it)"
    ) in text
    assert "verify-evidence: manifests/made-up.txt: not written by any run" in text


def test_a_red_line_without_its_manifest_warns_and_a_green_one_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_key: None
) -> None:
    """A run whose manifest could not be written (a full disk) records its line red, without a
    manifest: verify-evidence says so without failing every later check; a green line so
    recorded is a problem (it is what a forger would add)."""
    from cron_dryrun.evidence.ledger import append_entry

    audit = tmp_path / "audit"
    real_run(audit, NOW - 3 * H)
    writer = EvidenceWriter(audit, Redactor([]))
    append_entry(writer, LedgerEntry(NOW - 2 * H, TARGET, "NO-GO", run_id="20261207T100000Z-red"))
    code, text = verify(audit, capsys)
    assert code == 0, text
    assert (
        "verify-evidence: warning: ledger line 2: no manifest records it in the chain (not "
        "written by any run)\n"
    ) in text
    append_entry(writer, LedgerEntry(NOW - H, TARGET, "GO", run_id="20261207T110000Z-green"))
    code, text = verify(audit, capsys)
    assert code == 1
    assert (
        "verify-evidence: ledger line 3: no manifest records it in the chain (not written by any "
        "run)\n"
    ) in text
