"""The evidence writer: redaction, atomic and locked writes, renderers, manifests."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from cron_dryrun.evidence import (
    FACTS_END,
    FACTS_START,
    OPERATOR_HEADING,
    SUMMARY_RELPATH,
    EvidenceError,
    EvidenceWriter,
    Redactor,
    RunFacts,
    add_summary_entry,
    check_manifests,
    flag_state_of,
    format_transcripts,
    insert_run_entry,
    notes_relpath,
    render_notes,
    render_summary_entry,
    run_secrets,
    smoke_log_relpath,
    update_notes,
    verify_manifests,
    write_manifest,
)
from cron_dryrun.target.client import Transcript

SECRET = "s3cr3t-cron-token-XYZ"
DB_PASSWORD = "pg p@ss/word"  # needs quoting in a URL: exercises the encoded forms
DSN = f"postgresql://app:{quote(DB_PASSWORD, safe='')}@db.example.net:5432/app"
RUN_AT = datetime(2025, 10, 8, 2, 0, 4, tzinfo=UTC)


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(run_secrets(SECRET, DSN))


@pytest.fixture
def writer(tmp_path: Path, redactor: Redactor) -> EvidenceWriter:
    return EvidenceWriter(tmp_path / "audit", redactor)


def transcript(**overrides: object) -> Transcript:
    values: dict[str, object] = {
        "label": "main exchange",
        "method": "POST",
        "url": "https://staging.cogni-track.app/api/cron/daily-usage",
        "request_headers": (
            ("Content-Type", "application/json"),
            ("Authorization", f"Bearer {SECRET}"),
        ),
        "request_body": b"",
        "started_at": RUN_AT,
        "elapsed_s": 1.25,
        "status": 200,
        "reason": "OK",
        "response_headers": (("content-type", "application/json"), ("retry-after", "30")),
        "response_body": b'{"success": true, "telemetry": {"windowsProcessed": 8}}',
    }
    values.update(overrides)
    return Transcript(**values)  # type: ignore[arg-type]


def facts(**overrides: object) -> RunFacts:
    values: dict[str, object] = {
        "run_at": RUN_AT,
        "label": "Dry run",
        "target": "https://staging.cogni-track.app/api/cron/daily-usage",
        "method": "POST",
        "request": "POST https://staging.cogni-track.app/api/cron/daily-usage -> 200 OK in 1.25s",
        "windows_processed": 8,
        "expected_windows": 8,
        "stored_events": 12,
        "updated_events": 0,
        "issues_by_code": {"PRICING_FALLBACK": 2},
        "throttling_headers": {"Retry-After": "30"},
        "manual_fallback": {"manualFallbackWindows": 0, "manualFallbackInserts": 0},
        "flag_state": "true",
        "verdict": "GO",
        "checks": [("auth_smoke", "passed", ""), ("parity", "passed", "")],
        "smoke_log": "cron-dry-run/smoke-20251008T020004Z.log",
        "diff_report": "telemetry-audit/2025-10-08T02-00-04Z-cron-diff.json",
        "report": "report-20251008T020004Z.html",
        "body_json": '{"success": true, "telemetry": {"windowsProcessed": 8}}',
        "notable": ["PRICING_FALLBACK for gpt-4o-mini-2024-07-18"],
        "follow_ups": [],
        "parity_result": "within 2 %: max token delta 0.4 %",
    }
    values.update(overrides)
    return RunFacts(**values)  # type: ignore[arg-type]


# -- redaction ------------------------------------------------------------------------------------


class TestRedactor:
    def test_the_cron_secret_in_a_header_a_body_and_a_url(self, redactor: Redactor) -> None:
        text = (
            f'X-Debug: {SECRET}\n{{"echo": "{SECRET}"}}\nGET https://host/api?token={SECRET}&x=1\n'
        )
        out = redactor.redact(text)
        assert SECRET not in out
        assert out.count("[REDACTED]") == 3

    def test_encoded_forms_of_a_secret(self, redactor: Redactor) -> None:
        b64 = base64.b64encode(SECRET.encode()).decode()
        quoted = quote(DB_PASSWORD, safe="")
        out = redactor.redact(f"basic={b64} q={quoted} raw={DB_PASSWORD}")
        assert b64 not in out and quoted not in out and DB_PASSWORD not in out

    def test_dsn_userinfo_is_replaced_whole(self) -> None:
        out = Redactor([]).redact(
            "connecting to postgres://admin:hunter2@db.internal:5432/app failed"
        )
        assert out == "connecting to postgres://***@db.internal:5432/app failed"
        assert Redactor([]).redact("postgresql://user@host/db") == "postgresql://***@host/db"

    def test_a_password_with_at_signs_leaves_nothing_behind(self) -> None:
        assert Redactor([]).redact("postgres://u:p@ss@host/db") == "postgres://***@host/db"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("> Authorization: Bearer abc.def", "> Authorization: Bearer [REDACTED]"),
            ("authorization: token-without-scheme", "authorization: [REDACTED]"),
            ("AUTHORIZATION: Basic dXNlcjpwYXNz", "AUTHORIZATION: Basic [REDACTED]"),
            ('{"authorization": "Bearer abc"}', '{"authorization": "Bearer [REDACTED]"}'),
            ('{"Authorization":"raw-value"}', '{"Authorization":"[REDACTED]"}'),
            ("{'Authorization': 'Bearer abc'}", "{'Authorization': 'Bearer [REDACTED]'}"),
            ("(('Authorization', 'Bearer abc'),)", "(('Authorization', 'Bearer [REDACTED]'),)"),
            ("Authorization: Bearer ", "Authorization: Bearer "),  # an empty token hides nothing
        ],
    )
    def test_authorization_values_in_every_form(self, text: str, expected: str) -> None:
        assert Redactor([]).redact(text) == expected

    def test_bearer_tokens_anywhere(self) -> None:
        assert (
            Redactor([]).redact("sent bearer eyJhbGciOi.x.y to host")
            == "sent bearer [REDACTED] to host"
        )

    @pytest.mark.parametrize(
        "key",
        [
            "sk-abcdefghijklmnop1234",
            "sk-proj-AbC_dEf-123456789",
            "sk-admin-0123456789abcdef",
            "sk-svcacct-xyzxyzxyzxyz",
        ],
    )
    def test_openai_style_keys(self, key: str) -> None:
        assert Redactor([]).redact(f"key={key}; next") == "key=[REDACTED]; next"

    def test_words_that_merely_contain_sk_are_kept(self) -> None:
        text = "task-scheduler risk-assessment disk-usage"
        assert Redactor([]).redact(text) == text

    def test_a_short_secret_is_still_redacted_exactly(self) -> None:
        assert Redactor(["ab9"]).redact("x ab9 y") == "x [REDACTED] y"

    def test_a_traceback_with_secret_dsn_and_headers(self, redactor: Redactor) -> None:
        traceback = (
            "Traceback (most recent call last):\n"
            f'  File "x.py", line 3, in <module>\n    connect("{DSN}")\n'
            f"psycopg.OperationalError: password authentication failed: {DB_PASSWORD}\n"
            f"headers={{'Authorization': 'Bearer {SECRET}', 'Accept': '*/*'}}\n"
        )
        out = redactor.redact(traceback)
        for leaked in (SECRET, DB_PASSWORD, quote(DB_PASSWORD, safe=""), "app:"):
            assert leaked not in out
        assert "postgresql://***@db.example.net:5432/app" in out
        assert "'Accept': '*/*'" in out

    def test_libpq_keyword_password(self) -> None:
        assert (
            Redactor([]).redact("host=db password=hunter2 user=x")
            == "host=db password=[REDACTED] user=x"
        )

    def test_idempotent_even_when_a_secret_is_part_of_the_marker(self) -> None:
        r = Redactor(["ED"])
        once = r.redact("RED ED")
        assert once == "R[REDACTED] [REDACTED]"
        assert r.redact(once) == once

    def test_bytes_that_are_not_utf8_survive(self, redactor: Redactor) -> None:
        data = b"\xff\xfe " + SECRET.encode() + b" \x80"
        assert redactor.redact_bytes(data) == b"\xff\xfe [REDACTED] \x80"


# -- the writer -----------------------------------------------------------------------------------


class TestWriter:
    def test_write_text_redacts_before_the_bytes_reach_disk(self, writer: EvidenceWriter) -> None:
        path = writer.write_text("cron-dry-run/x.log", f"token {SECRET}\n")
        assert path.read_text() == "token [REDACTED]\n"

    def test_write_json_sorted_and_indented(self, writer: EvidenceWriter) -> None:
        path = writer.write_json("gate.json", {"b": 1, "a": {"secret": SECRET}})
        assert path.read_text() == '{\n  "a": {\n    "secret": "[REDACTED]"\n  },\n  "b": 1\n}\n'

    def test_atomic_write_leaves_the_old_file_when_the_rename_fails(
        self, writer: EvidenceWriter, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = writer.write_text("summary.md", "old\n")

        def boom(src: str, dst: str) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(os, "replace", boom)
        with pytest.raises(OSError, match="disk full"):
            writer.write_text("summary.md", "new\n")
        assert path.read_text() == "old\n"
        assert sorted(p.name for p in path.parent.iterdir()) == ["summary.md"]  # no temp file left

    def test_paths_outside_the_audit_folder_are_refused(self, writer: EvidenceWriter) -> None:
        with pytest.raises(EvidenceError, match=r"\.\./x: evidence paths must be relative"):
            writer.write_text("../x", "no")

    def test_write_new_never_overwrites(self, writer: EvidenceWriter) -> None:
        rel = smoke_log_relpath(RUN_AT)
        first = writer.write_new(rel, "first")
        second = writer.write_new(rel, "second")
        assert first.name == "smoke-20251008T020004Z.log"
        assert second.name == "smoke-20251008T020004Z-2.log"
        assert (first.read_text(), second.read_text()) == ("first", "second")

    def test_new_path_reserves_exclusively(self, writer: EvidenceWriter) -> None:
        a = writer.new_path("cron-dry-run/smoke-X.log")
        b = writer.new_path("cron-dry-run/smoke-X.log")
        assert (a.name, b.name) == ("smoke-X.log", "smoke-X-2.log")

    def test_update_locked_and_append_jsonl(self, writer: EvidenceWriter) -> None:
        writer.append_jsonl_locked("l.jsonl", {"b": 2, "a": SECRET})
        writer.append_jsonl_locked("l.jsonl", {"n": 3})
        assert (
            writer.audit_dir / "l.jsonl"
        ).read_text() == '{"a": "[REDACTED]", "b": 2}\n{"n": 3}\n'

    def test_artefact_names(self) -> None:
        assert notes_relpath(RUN_AT) == "cron-dry-run/notes-2025-10-08.md"


def _insert_entries(
    audit_dir: str, label: str, count: int, barrier: multiprocessing.synchronize.Barrier
) -> None:
    writer = EvidenceWriter(Path(audit_dir), Redactor([SECRET]))
    barrier.wait(timeout=30)
    for n in range(count):
        entry = render_summary_entry(
            facts(label=f"{label} {n}", body_json=json.dumps({"run": f"{label}{n}"}))
        )

        def slow_insert(old: str, entry: str = entry) -> str:
            os.sched_yield()  # widen the read-modify-write window a lock must protect
            return insert_run_entry(old, entry)

        writer.update_locked(SUMMARY_RELPATH, slow_insert)


def test_two_processes_appending_to_summary_lose_nothing(tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    earlier = "# Summary\n\nOperator intro, kept.\n\n## Runs\n\n#### 2025-10-01T02:00:00Z — old run\n\n- kept\n"
    (audit / "cron-dry-run").mkdir(parents=True)
    (audit / SUMMARY_RELPATH).write_text(earlier)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_insert_entries, args=(str(audit), name, 15, barrier))
        for name in ("alpha", "beta")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    text = (audit / SUMMARY_RELPATH).read_text()
    headings = re.findall(r"^#### .* — (.*)$", text, flags=re.M)
    assert sorted(headings) == sorted(
        [f"alpha {n}" for n in range(15)] + [f"beta {n}" for n in range(15)] + ["old run"]
    )
    assert headings[-1] == "old run"  # earlier content stays below the new entries
    assert text.endswith("#### 2025-10-01T02:00:00Z — old run\n\n- kept\n")
    assert text.startswith("# Summary\n\nOperator intro, kept.\n\n## Runs\n\n")
    for name in ("alpha", "beta"):  # each process's entries newest first, each entry complete
        mine = [h for h in headings if h.startswith(name)]
        assert mine == [f"{name} {n}" for n in reversed(range(15))]
    assert text.count("```json") == 30


# -- transcripts ----------------------------------------------------------------------------------


def test_format_transcripts_as_curl_shows_them(redactor: Redactor) -> None:
    negative = transcript(
        label="auth negative: no header",
        request_headers=(("Content-Type", "application/json"),),
        status=401,
        reason="Unauthorized",
        response_headers=(("content-type", "application/json"),),
        response_body=b'{"error":"Unauthorized"}',
    )
    failed = transcript(
        label="auth negative: wrong token",
        status=None,
        reason="",
        response_headers=(),
        response_body=b"",
        error="ConnectError: refused",
    )
    text = redactor.redact(format_transcripts([transcript(), negative, failed]))
    assert text.splitlines()[:14] == [
        "### main exchange",
        "# POST https://staging.cogni-track.app/api/cron/daily-usage at 2025-10-08T02:00:04Z, 1.250s",
        "> POST /api/cron/daily-usage HTTP/1.1",
        "> Host: staging.cogni-track.app",
        "> Content-Type: application/json",
        "> Authorization: Bearer [REDACTED]",
        ">",
        "< HTTP/1.1 200 OK",
        "< content-type: application/json",
        "< retry-after: 30",
        "<",
        "# body: no content-encoding, 55 bytes received",
        '{"success": true, "telemetry": {"windowsProcessed": 8}}',
        "",
    ]
    assert "### auth negative: no header\n" in text
    assert "< HTTP/1.1 401 Unauthorized\n" in text
    assert "### auth negative: wrong token\n" in text
    assert "! transport error, no response: ConnectError: refused\n" in text
    assert SECRET not in text


# -- summary.md -----------------------------------------------------------------------------------


def test_render_summary_entry() -> None:
    entry = render_summary_entry(facts())
    assert entry.splitlines()[:16] == [
        "#### 2025-10-08T02:00:04Z — Dry run",
        "",
        "- **Request:** POST https://staging.cogni-track.app/api/cron/daily-usage -> 200 OK in 1.25s",
        "- **Target:** https://staging.cogni-track.app/api/cron/daily-usage",
        "- **Windows processed:** 8 (expected 8)",
        "- **Stored events:** 12",
        "- **Updated events:** 0",
        "- **Issues by code:** `PRICING_FALLBACK`: 2",
        "- **Retry-After/throttling headers:** `Retry-After: 30`",
        "- **Manual fallback:** manualFallbackInserts 0, manualFallbackWindows 0",
        "- **Flag state:** `flags.enableDailyUsageWindows` true",
        "- **Verdict:** **GO**",
        "- **Notes:** PRICING_FALLBACK for gpt-4o-mini-2024-07-18",
        "- **Artefacts:** [smoke log](smoke-20251008T020004Z.log) · "
        "[diff JSON](../telemetry-audit/2025-10-08T02-00-04Z-cron-diff.json) · "
        "[HTML report](../report-20251008T020004Z.html)",
        "",
        "```json",
    ]
    assert entry.endswith(
        '  "success": true,\n  "telemetry": {\n    "windowsProcessed": 8\n  }\n}\n```\n'
    )


def test_summary_entry_of_a_failed_run() -> None:
    entry = render_summary_entry(
        facts(
            verdict="NO-GO",
            checks=[("flag_state", "failed", "flags missing\nsecond line")],
            body_json=None,
            issues_by_code={},
            throttling_headers={},
            windows_processed=None,
            follow_ups=["ticket UNKNOWN x2"],
        )
    )
    assert "- **Verdict:** **NO-GO** (flag_state failed: flags missing second line)\n" in entry
    assert "- **Windows processed:** unknown (expected 8)\n" in entry
    assert "- **Issues by code:** none\n" in entry
    assert "- **Retry-After/throttling headers:** none\n" in entry
    assert "follow-up: ticket UNKNOWN x2" in entry
    assert "```json\n(no JSON body)\n```\n" in entry


def test_a_body_with_backticks_cannot_close_the_fence() -> None:
    entry = render_summary_entry(facts(body_json="not json ``` ## Runs"))
    assert "````json\nnot json ``` ## Runs\n````\n" in entry


ENTRY = "#### 2025-10-09T02:00:00Z — new\n\n- new bullet\n"


class TestInsertRunEntry:
    def test_an_empty_file_gets_a_title_and_the_section(self) -> None:
        assert (
            insert_run_entry("", ENTRY)
            == f"# Daily usage cron dry run — summary\n\n## Runs\n\n{ENTRY}"
        )

    def test_a_file_without_runs_gets_the_section_appended(self) -> None:
        existing = "# Summary\n\nhand-written text\n"
        assert insert_run_entry(existing, ENTRY) == existing + f"\n## Runs\n\n{ENTRY}"

    def test_the_entry_goes_on_top_and_everything_else_stays(self) -> None:
        existing = (
            "# Summary\n\nintro\n\n## Runs\n\nNewest first.\n\n"
            "#### 2025-10-08T02:00:00Z — old\n\n- old bullet\n\n```json\n{}\n```\n\n"
            "## Appendix\n\noperator text\n"
        )
        out = insert_run_entry(existing, ENTRY)
        head = "# Summary\n\nintro\n\n## Runs\n\nNewest first.\n\n"
        assert out == head + ENTRY + "\n" + existing[len(head) :]

    def test_an_empty_runs_section_before_another_section(self) -> None:
        existing = "# S\n\n## Runs\n\n## Appendix\n\nx\n"
        assert insert_run_entry(existing, ENTRY) == f"# S\n\n## Runs\n\n{ENTRY}\n## Appendix\n\nx\n"

    def test_runs_heading_inside_a_code_block_is_not_the_section(self) -> None:
        existing = "# S\n\n```\n## Runs\n```\n"
        out = insert_run_entry(existing, ENTRY)
        assert out == existing + f"\n## Runs\n\n{ENTRY}"


# -- notes ----------------------------------------------------------------------------------------


def test_notes_template_then_a_rerun_keeps_operator_comments() -> None:
    first = render_notes(facts(), None)
    assert first.startswith("# Operator notes — 2025-10-08\n")
    for line in (
        "- Run timestamp: 2025-10-08T02:00:04Z",
        "- Trigger mode: manual trigger, POST as the runbook's curl command",
        "- Flag state: flags.enableDailyUsageWindows true",
        "- Windows processed: 8 (expected 8)",
        "- Updated events: 0",
        "- Issues by code: `PRICING_FALLBACK`: 2",
        "- Retry-After headers: `Retry-After: 30`",
        "- Manual fallback usage: manualFallbackInserts 0, manualFallbackWindows 0",
        "  - PRICING_FALLBACK for gpt-4o-mini-2024-07-18",
        "- Parity diff result: within 2 %: max token delta 0.4 %",
        "  - none",
    ):
        assert line in first.splitlines()
    assert first.index(FACTS_END) < first.index(OPERATOR_HEADING)

    comments = "Checked Neon logs: writes only in [2025-10-07, 2025-10-09).\n\n- ticket OPS-12\n"
    edited = first + comments
    rerun = facts(windows_processed=6, updated_events=8, follow_ups=["look at UNKNOWN"])
    second = render_notes(rerun, edited)
    assert second.endswith(comments)
    assert "- Windows processed: 6 (expected 8)" in second
    assert "- Windows processed: 8 (expected 8)" not in second  # the same run's facts were replaced
    assert "  - [ ] look at UNKNOWN" in second
    assert second.count("### Run ") == 1

    later = render_notes(facts(run_at=RUN_AT.replace(hour=14), label="Manual rerun"), second)
    assert later.count("### Run ") == 2
    assert later.index("### Run 2025-10-08T14:00:04Z — Manual rerun") < later.index(
        "### Run 2025-10-08T02:00:04Z"
    )
    assert later.endswith(comments)
    assert later.split(FACTS_START)[0] == second.split(FACTS_START)[0]


def test_a_hand_written_notes_file_becomes_the_operator_comments() -> None:
    hand = "# my notes\n\nsaw a 429 at 02:01\n"
    out = render_notes(facts(), hand)
    assert out.endswith(
        f"{OPERATOR_HEADING}\n\n<!-- Write below; cron-dryrun keeps this section verbatim "
        f"when it rewrites the facts. -->\n\n{hand}"
    )


def test_flag_state_as_found() -> None:
    assert flag_state_of({"flags": {"enableDailyUsageWindows": True}}) == "true"
    assert flag_state_of({"flags": {"enableDailyUsageWindows": False}}) == "false"
    assert flag_state_of({"success": True}) == "missing"
    assert (
        flag_state_of({"flags": {"enableDailyUsageWindows": "true"}})
        == '"true" (not a JSON boolean)'
    )


# -- manifests ------------------------------------------------------------------------------------


def test_manifest_round_trip_and_detection(writer: EvidenceWriter) -> None:
    a = writer.write_text("cron-dry-run/smoke-1.log", "a\n")
    b = writer.write_text("telemetry-audit/d.json", "{}\n")
    manifest = write_manifest(writer, "20251008T020004Z", [a, "telemetry-audit/d.json"])
    assert manifest == writer.audit_dir / "manifests/20251008T020004Z.sha256"
    lines = manifest.read_text().splitlines()
    assert [line.split("  ")[1] for line in lines] == [
        "cron-dry-run/smoke-1.log",
        "telemetry-audit/d.json",
    ]
    assert re.fullmatch(r"[0-9a-f]{64}", lines[0].split("  ")[0])
    assert verify_manifests(writer.audit_dir) == []
    assert check_manifests(writer.audit_dir).files == 2

    a.write_text("tampered\n")
    b.unlink()
    problems = verify_manifests(writer.audit_dir)
    assert len(problems) == 2
    assert problems[0].startswith(
        "cron-dry-run/smoke-1.log: changed (listed in manifests/20251008T020004Z.sha256; sha256 expected "
    )
    assert (
        problems[1]
        == "telemetry-audit/d.json: missing (listed in manifests/20251008T020004Z.sha256)"
    )


def test_a_manifest_is_never_replaced_and_refuses_mutable_files(writer: EvidenceWriter) -> None:
    a = writer.write_text("x.log", "a")
    first = write_manifest(writer, "run1", [a])
    second = write_manifest(writer, "run1", [a])
    assert (first.name, second.name) == ("run1.sha256", "run1-2.sha256")
    writer.write_text(SUMMARY_RELPATH, "s")
    with pytest.raises(EvidenceError, match=r"cron-dry-run/summary\.md is rewritten by later runs"):
        write_manifest(writer, "run2", [SUMMARY_RELPATH])


def test_no_manifests_is_a_problem(tmp_path: Path) -> None:
    assert verify_manifests(tmp_path) == [
        f"no manifests in {tmp_path / 'manifests'}: nothing to verify"
    ]


# -- end to end -----------------------------------------------------------------------------------


def test_a_runs_files_hold_no_secret_and_a_second_run_in_that_second_gets_its_own(
    writer: EvidenceWriter, tmp_path: Path
) -> None:
    """The files a run's finish writes (session.finish: smoke log, summary entry, notes,
    manifest) and the parity report, through the writer and the same functions."""
    from cron_dryrun.parity.report import report_path

    leaky = transcript(
        response_body=f'{{"dsn": "{DSN}", "key": "sk-proj-abcdefghijkl123"}}'.encode()
    )
    exchanges = [leaky, transcript(label="auth negative: no header")]
    run = facts(smoke_log=None, diff_report=None, report=None, notable=[f"log line with {SECRET}"])
    smoke = writer.relpath(
        writer.write_new(smoke_log_relpath(run.run_at), format_transcripts(exchanges))
    )
    diff = writer.relpath(
        writer.write_new(
            writer.relpath(report_path(writer.audit_dir, run.run_at)),
            json.dumps({"mismatched": [], "note": DB_PASSWORD}),
        )
    )
    run = replace(run, smoke_log=smoke, diff_report=diff)
    add_summary_entry(writer, run)
    update_notes(writer, run)
    manifest = writer.relpath(write_manifest(writer, "20251008T020004Z", [smoke, diff]))
    assert smoke == "cron-dry-run/smoke-20251008T020004Z.log"
    assert diff == "telemetry-audit/2025-10-08T02-00-04Z-cron-diff.json"
    assert manifest == "manifests/20251008T020004Z.sha256"
    summary = (writer.audit_dir / SUMMARY_RELPATH).read_text()
    assert "[smoke log](smoke-20251008T020004Z.log)" in summary
    assert verify_manifests(writer.audit_dir) == []

    again = writer.relpath(
        writer.write_new(smoke_log_relpath(run.run_at), format_transcripts([transcript()]))
    )
    assert again == "cron-dry-run/smoke-20251008T020004Z-2.log"
    assert writer.relpath(write_manifest(writer, "20251008T020004Z", [again])) == (
        "manifests/20251008T020004Z-2.sha256"
    )

    files = [p for p in writer.audit_dir.rglob("*") if p.is_file()]
    assert len(files) >= 7
    for path in files:
        data = path.read_bytes()
        for secret in (SECRET, DB_PASSWORD, quote(DB_PASSWORD, safe=""), "sk-proj-abcdefghijkl123"):
            assert secret.encode() not in data, f"{secret!r} leaked into {path}"


def test_check_updatable_raises_what_the_update_would_and_writes_nothing(
    writer: EvidenceWriter, tmp_path: Path
) -> None:
    assert writer.check_updatable("cron-dry-run/ledger.jsonl") == (
        writer.audit_dir / "cron-dry-run" / "ledger.jsonl"
    )
    assert not (writer.audit_dir / "cron-dry-run" / "ledger.jsonl").exists()
    (writer.audit_dir / "folder.jsonl").mkdir()
    with pytest.raises(IsADirectoryError):
        writer.check_updatable("folder.jsonl")
    (writer.audit_dir / "latin1.jsonl").write_bytes(b"caf\xe9\n")
    with pytest.raises(UnicodeDecodeError):
        writer.check_updatable("latin1.jsonl")
    (tmp_path / "elsewhere.jsonl").write_text("")
    (writer.audit_dir / "link.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(EvidenceError, match="is a symlink"):
        writer.check_updatable("link.jsonl")
