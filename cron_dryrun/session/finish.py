"""Glue between the session's state and the evidence library: what each run writes where.

Order at the end of a session: ledger status with this run's line (the promotion
gate may turn GO into NO-GO), smoke log + summary + notes + manifest, gate.json,
and the ledger line last, so a line only exists for a run whose evidence is on
disk. A file that cannot be written turns the verdict into NO-GO naming it. A run
that triggered nothing writes gate.json alone (with its snapshot and a manifest of it). The HTML report is copied in
through the writer after pytest-html has written it (``finish_html``).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cron_dryrun.evidence import (
    GATE_RELPATH,
    LATEST_REPORT_RELPATH,
    LEDGER_RELPATH,
    SUMMARY_RELPATH,
    EvidenceError,
    EvidenceWriter,
    Redactor,
    RunFacts,
    add_summary_entry,
    correct_summary_entry,
    flag_state_of,
    format_transcripts,
    gate_snapshot_relpath,
    iso_z,
    ledger,
    manifest_relpath,
    manual_fallback_of,
    notes_relpath,
    report_relpath,
    run_block,
    smoke_log_relpath,
    telemetry_of,
    update_notes,
    write_manifest,
)
from cron_dryrun.evidence.trust import evidence_key, judge_ledger, record_run
from cron_dryrun.redaction import escape_controls, known_secrets
from cron_dryrun.rules.gate import REQUIRED_STEPS, StepResult, Verdict, first_line
from cron_dryrun.target.watch import exchange_durations
from cron_dryrun.windows import daily_windows, expected_windows_processed, iso

if TYPE_CHECKING:
    from cron_dryrun.session.state import DryRunState


def writer_for(state: DryRunState) -> EvidenceWriter:
    """The run's one writer; rebuilt only when a new secret became known (the local stack's).

    Called on every terminal write: the cache is keyed on what can change during a run (the
    target and the secrets added to the state; settings are frozen), so the derived secret
    forms are computed only when one of those changed.
    """
    target = state.target
    key = (
        state.settings,
        target.secret if target else None,
        target.database_dsn if target else None,
        frozenset(state.secrets),
    )
    if state._writer is None or state._writer[0] != key:
        secrets = run_secret_values(state)
        state._writer = (key, EvidenceWriter(state.settings.audit_dir, Redactor(secrets)))
    return state._writer[1]


def run_secret_values(state: DryRunState) -> tuple[str, ...]:
    """Everything the run must never print or write (see cron_dryrun.redaction)."""
    settings = state.settings
    target = state.target
    values: list[str] = []
    for secret in {settings.cron_secret, target.secret if target else None, *state.secrets}:
        values.extend(known_secrets(secret))
    values.extend(
        known_secrets(
            None,
            dsns=(settings.database_url, target.database_dsn if target else None),
            urls=(settings.cron_url,),
            extra=(
                *settings.extra_secrets,
                *settings.openai_admin_keys,
                settings.vercel_bypass_secret,
            ),
        )
    )
    return tuple(sorted(set(values)))


def previous_manual_fallback_windows(audit_dir: Path, target: str) -> int | None:
    """manualFallbackWindows of this target's last recorded run, for the two-runs-in-a-row rule."""
    mine = ledger.entries_for(ledger.read_ledger(audit_dir / LEDGER_RELPATH).entries, target)
    return mine[-1].manual_fallback_windows if mine else None


def _request_line(state: DryRunState) -> str:
    run = state.run
    if run is None or run.exchange is None:
        return f"{state.settings.cron_method} {state.settings.target_name}: not triggered"
    final = run.exchange.final
    answer = (
        f"{final.status} {final.reason}"
        if final.status is not None
        else f"no answer ({final.error})"
    )
    retries = (
        f" after {len(run.exchange.attempts) - 1} throttled attempt(s)"
        if len(run.exchange.attempts) > 1
        else ""
    )
    return f"{final.method} {final.url} -> {answer} in {final.elapsed_s:.2f}s{retries}"


def run_facts(state: DryRunState, verdict: Verdict) -> RunFacts:
    run = state.run
    body = run.body if run else None
    telemetry = telemetry_of(body)
    keys = run.active_openai_keys if run else None
    parity = state.records.get("parity") or {}
    writer = writer_for(state)
    notable = [*state.records.get("telemetry_warnings", [])]
    notable.extend(f"parity warning: {w}" for w in parity.get("warnings", []))
    if run and run.problem:
        notable.append(f"exchange: {run.problem}")
    if run and run.db_error:
        notable.append(f"database: {run.db_error}")
    from cron_dryrun.session.reporting import led_by_root_cause

    follow_ups = led_by_root_cause(state) if state.verdict is verdict else list(verdict.reasons)
    cause = state.root_cause
    issues = (
        telemetry.get("issuesByCode") if isinstance(telemetry.get("issuesByCode"), dict) else {}
    )
    return RunFacts(
        run_at=run.run_at if run else state.started_at,
        label=state.settings.run_label,
        target=describe(state),
        method=state.settings.cron_method,
        # what the target sent (reason phrase, problems, reasons) never draws on a screen
        request=escape_controls(_request_line(state)),
        windows_processed=telemetry.get("windowsProcessed"),
        expected_windows=expected_windows_processed(keys) if keys is not None else None,
        stored_events=telemetry.get("storedEvents"),
        updated_events=telemetry.get("updatedEvents"),
        issues_by_code=issues or {},
        throttling_headers=run.exchange.throttling_headers if run and run.exchange else {},
        manual_fallback=manual_fallback_of(body),
        flag_state=flag_state_of(body),
        verdict=verdict.label,
        checks=tuple((s.step, s.status, escape_controls(s.reason)) for s in verdict.steps),
        diff_report=_relpath_or_none(writer, parity.get("report")),
        body_json=json.dumps(body, indent=2, sort_keys=True) if body is not None else None,
        notable=tuple(escape_controls(n) for n in notable),
        exchanges=(
            escape_controls(exchange_durations(state.transcripts)) if state.transcripts else None
        ),
        follow_ups=tuple(escape_controls(f) for f in follow_ups),
        parity_result=str(parity.get("summary", "not run")),
        run_id=state.run_id,
        root_cause=(cause.cause, cause.fix, cause.consequences) if cause is not None else None,
    )


def _relpath_or_none(writer: EvidenceWriter, path: str | Path | None) -> str | None:
    """``path`` relative to the audit folder; None for none, or when it lies outside it."""
    if not path:
        return None
    try:
        return writer.relpath(path)
    except ValueError:
        return None


def describe(state: DryRunState) -> str:
    from cron_dryrun.session.reporting import describe_target

    return describe_target(state)


def _ledger_entry(state: DryRunState, verdict: Verdict, target_key: str) -> ledger.LedgerEntry:
    run_at = state.run_at
    telemetry = telemetry_of(state.run.body if state.run else None)
    if state.interrupted:
        completeness = ledger.INTERRUPTED
    elif verdict.partial:
        completeness = ledger.PARTIAL
    else:
        completeness = ledger.COMPLETE
    mfw = telemetry.get("manualFallbackWindows")
    return ledger.LedgerEntry(
        time=run_at,
        target=target_key,
        verdict=verdict.label,
        label=state.settings.run_label,
        telemetry={
            k: v
            for k, v in telemetry.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
        windows=tuple((iso(w.start), iso(w.end)) for w in daily_windows(run_at)),
        artefacts={},
        manual_fallback_windows=mfw if isinstance(mfw, int) else None,
        failed_checks=tuple(s.step for s in verdict.steps if s.status != "passed"),
        completeness=completeness,
        run_id=state.run_id,
    )


def _no_go(verdict: Verdict, reason: str) -> Verdict:
    return replace(verdict, go=False, reasons=(*verdict.reasons, reason))


def _evidence_reason(failures: list[str]) -> str:
    return (
        "evidence could not be written, so this run cannot be GO: "
        + "; ".join(failures)
        + " (check the audit folder's permissions and free space, then run again)"
    )


def write_all(state: DryRunState, gate_document: Callable[[DryRunState], dict[str, Any]]) -> None:
    """Every file of the run, the ledger line last; a file that cannot be written is NO-GO.

    A run that triggered nothing writes gate.json (and its snapshot) only: no ledger line, summary
    entry or notes, so the ledger holds real runs alone.
    """
    assert state.verdict is not None
    writer = writer_for(state)
    notes = state.terminal_notes
    notes.extend(
        f"warning: parity: {w}" for w in (state.records.get("parity") or {}).get("warnings", [])
    )
    if not state.triggered:
        _write_untriggered(state, writer, gate_document)
        return
    checks_verdict = state.verdict
    target_key = ledger.normalise_target(state.settings.target_name)
    entry = _ledger_entry(state, checks_verdict, target_key)
    # 1. where the dry run stands once this run's line is in (the line itself is written last)
    _assess_dry_run(state, entry, target_key)

    # 2. smoke log, summary entry, notes: each on its own, each failure named
    failures: list[str] = []
    judged = state.verdict
    own, blocks, facts = _write_run_files(state, writer, failures)
    # the ledger must take this run's line at the end: a ledger that cannot (a folder in its
    # place, no permission, not UTF-8) is known now, before the manifest lists the line and
    # while the summary entry and notes can still be made to say NO-GO
    ledger_ok = (
        _try(failures, LEDGER_RELPATH, lambda: writer.check_updatable(LEDGER_RELPATH)) is not None
    )
    if failures:
        state.verdict = _no_go(judged, _evidence_reason(failures))
        entry = _red_for_evidence(entry)
        blocks = _corrected_blocks(state, writer, facts, blocks)

    # 3. this run's gate snapshot and gate.json
    _write_gate(state, writer, gate_document, failures)
    snapshot = state.artefacts.get("gate snapshot")
    if snapshot is not None:
        own.append(writer.relpath(snapshot))
    rel = manifest_relpath(state.run_id)
    key = evidence_key()
    # 4. the manifest and the ledger line, under the ledger's lock: the manifest lists the line
    # and the chain head after it, and a line is appended only once its manifest is on disk
    before = len(failures)
    if not ledger_ok:
        if _try(failures, rel, lambda: write_manifest(writer, state.run_id, own, blocks, key=key)):
            _note_failures(state, failures)
            return
        state.verdict = _no_go(judged, _evidence_reason(failures))
        _write_gate(state, writer, gate_document, [])  # no manifest lists the snapshot
        _note_failures(state, failures)
        return
    try:
        record_run(writer, entry, own, blocks, key=key)
    except Exception as exc:  # last resort, as _try: named, NO-GO, the verdict still written
        failures.append(f"{rel} ({type(exc).__name__}: {first_line(str(exc))})")
    if len(failures) > before:
        # no manifest: the line is still recorded, red, so the run is on file (it never counts)
        state.verdict = _no_go(judged, _evidence_reason(failures))
        entry = _red_for_evidence(entry)
        _corrected_blocks(state, writer, facts, blocks)
        _write_gate(state, writer, gate_document, [])
        try:
            ledger.append_entry(writer, entry, key=key)
        except Exception as exc:  # last resort, as _try
            failures.append(f"{LEDGER_RELPATH} ({type(exc).__name__}: {first_line(str(exc))})")
            state.verdict = _no_go(judged, _evidence_reason(failures))
            _write_gate(state, writer, gate_document, [])
    _note_failures(state, failures)


def _write_untriggered(
    state: DryRunState,
    writer: EvidenceWriter,
    gate_document: Callable[[DryRunState], dict[str, Any]],
) -> None:
    """A run that triggered nothing: gate.json, its snapshot and a manifest of it, alone."""
    state.terminal_notes.append(
        "nothing was triggered: no ledger line, smoke log, summary entry or notes were written"
    )
    refused: list[str] = []
    _write_gate(state, writer, gate_document, refused)
    # its gate.json has a run id and a snapshot in a manifest too, so verify-evidence's rule
    # (gate.json is the latest run's snapshot) holds for refused runs as well
    if not refused:
        snap = gate_snapshot_relpath(state.run_id)
        key = evidence_key()
        manifest = manifest_relpath(state.run_id)
        _try(refused, manifest, lambda: write_manifest(writer, state.run_id, [snap], key=key))


def _assess_dry_run(state: DryRunState, entry: ledger.LedgerEntry, target_key: str) -> None:
    """Where the dry run stands with this run's line in; the promotion gate turns it NO-GO
    while the 48 hours are incomplete or the ledger unreadable."""
    assert state.verdict is not None
    notes = state.terminal_notes
    status = None
    try:
        # only the suite's own lines count (evidence.trust): a hand-written line never does
        trusted = judge_ledger(state.settings.audit_dir, key=evidence_key())
        status = ledger.assess(
            [*trusted.counted, entry],
            state.settings.dry_run_start,
            datetime.now(UTC),
            target=target_key,
            problems=trusted.problems,
        )
        state.dry_run_status = status.to_json()
        notes.append(f"dry run: {status.describe()}")
        if status.manual_fallback_note:
            notes.append(f"dry run: {status.manual_fallback_note}")
    except Exception as exc:  # last resort: the verdict must still be written
        notes.append(f"ledger could not be read: {type(exc).__name__}: {exc}")

    if state.settings.promotion_gate:
        if status is None:
            extra = "promotion gate: the 48-hour ledger could not be read"
        elif not status.complete:
            extra = f"promotion gate: the 48-hour dry run is not complete ({status.describe()})"
        else:
            extra = None
        if extra:
            state.verdict = _no_go(state.verdict, extra)


def _note_failures(state: DryRunState, failures: list[str]) -> None:
    if failures and state.verdict is not None:
        state.terminal_notes.append(state.verdict.reasons[-1])


def _red_for_evidence(entry: ledger.LedgerEntry) -> ledger.LedgerEntry:
    """The ledger keeps the checks' verdict (a promotion-gate NO-GO is about the ledger, not the
    run), unless the run's own evidence is missing."""
    if entry.verdict == ledger.RED and "evidence" in entry.failed_checks:
        return entry
    return replace(entry, verdict=ledger.RED, failed_checks=(*entry.failed_checks, "evidence"))


def _try(failures: list[str], relpath: str, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except Exception as exc:  # last resort: a file that cannot be written is named, never fatal
        failures.append(f"{relpath} ({type(exc).__name__}: {first_line(str(exc))})")
        return None


def _reserve_report(state: DryRunState, writer: EvidenceWriter, run_at: datetime) -> str | None:
    """This run's dated HTML report name, reserved now so the summary and notes can link it;
    pytest-html's report is copied into it when the session ends (``finish_html``)."""
    if state.html_temp_path is None:
        return None
    if state.report_reserved is None:
        try:
            state.report_reserved = writer.new_path(report_relpath(run_at))
        except (OSError, EvidenceError):
            return None
    state.artefacts["report"] = state.report_reserved
    return writer.relpath(state.report_reserved)


def _write_run_files(
    state: DryRunState, writer: EvidenceWriter, failures: list[str]
) -> tuple[list[str], list[tuple[str, str]], RunFacts]:
    """Smoke log, summary entry, notes block; returns this run's own files and appended blocks."""
    assert state.verdict is not None
    facts = run_facts(state, state.verdict)
    facts = replace(facts, report=_reserve_report(state, writer, facts.run_at))
    own: list[str] = []
    blocks: list[tuple[str, str]] = []
    streamed = state.smoke
    if streamed is not None and streamed.error is not None:
        failures.append(streamed.error)
    elif streamed is not None and streamed.path is not None:
        own.append(writer.relpath(streamed.path))
        state.artefacts["smoke log"] = streamed.path
    elif state.transcripts:  # exchanges made without the plugin's client
        rel = smoke_log_relpath(facts.run_at)
        path = _try(
            failures,
            rel,
            lambda: writer.write_new(rel, format_transcripts(list(state.transcripts))),
        )
        if path is not None:
            own.append(writer.relpath(path))
            state.artefacts["smoke log"] = path
    if own:
        facts = replace(facts, smoke_log=own[0])
    # only what this run adds is redacted; the entry and the notes take the folder's own form
    entry = _try(failures, SUMMARY_RELPATH, lambda: add_summary_entry(writer, facts))
    if entry is not None:
        state.artefacts["summary"] = writer.path(SUMMARY_RELPATH)
        blocks.append((SUMMARY_RELPATH, entry))
    notes_rel = notes_relpath(facts.run_at)
    notes_path = _try(failures, notes_rel, lambda: update_notes(writer, facts))
    if notes_path is not None:
        state.artefacts["notes"] = notes_path
        block = _try(failures, notes_rel, lambda: run_block(notes_path.read_text(), state.run_id))
        if block is not None:
            blocks.append((notes_rel, block))
    if facts.diff_report:
        state.artefacts["diff report"] = writer.path(facts.diff_report)
        own.append(facts.diff_report)
        from cron_dryrun.parity.report import detail_path_for

        detail = detail_path_for(writer.path(facts.diff_report))
        if detail.is_file():
            state.artefacts["diff detail"] = detail
            own.append(writer.relpath(detail))
    own.extend(writer.relpath(p) for p in state.own_artefacts)  # e.g. fetched usage pages
    return own, blocks, facts


def _corrected_blocks(
    state: DryRunState,
    writer: EvidenceWriter,
    facts: RunFacts,
    blocks: list[tuple[str, str]],
) -> list[tuple[str, str]]:
    """The summary entry and notes block rewritten with the run's verdict as it now stands (an
    evidence failure after they were written made it NO-GO): neither may say GO where gate.json
    says NO-GO. A block that cannot be rewritten stays as it was (its failure is named already)."""
    assert state.verdict is not None
    if facts.verdict == state.verdict.label:
        return blocks
    facts = replace(
        facts,
        verdict=state.verdict.label,
        follow_ups=(*facts.follow_ups, state.verdict.reasons[-1]),
    )
    corrected: list[tuple[str, str]] = []
    for rel, block in blocks:
        new: str | None = None
        with contextlib.suppress(Exception):
            if rel == SUMMARY_RELPATH:
                new = correct_summary_entry(writer, facts)
            else:
                new = run_block(update_notes(writer, facts).read_text(), state.run_id)
        corrected.append((rel, new if new is not None else block))
    return corrected


def _write_gate(
    state: DryRunState,
    writer: EvidenceWriter,
    gate_document: Callable[[DryRunState], dict[str, Any]],
    failures: list[str],
) -> None:
    """gate-<run-id>.json (this run's, in its manifest) and gate.json (the latest), the same
    bytes, listing every artefact."""
    doc = gate_document(state)
    # gate.json names its snapshot (every run, refused ones too): verify-evidence compares them
    doc["run_id"] = state.run_id
    state.artefacts["manifest"] = writer.path(manifest_relpath(state.run_id))
    state.artefacts["gate snapshot"] = writer.path(gate_snapshot_relpath(state.run_id))
    links = {name: _relpath_or_none(writer, path) for name, path in state.artefacts.items()}
    doc["artefacts"] = {name: rel for name, rel in links.items() if rel is not None}
    rel = gate_snapshot_relpath(state.run_id)
    _try(failures, rel, lambda: writer.write_json(rel, doc))
    try:
        state.artefacts["gate"] = writer.write_json(GATE_RELPATH, doc)
    except Exception as exc:  # last resort, as _try
        failures.append(f"{GATE_RELPATH} ({type(exc).__name__}: {first_line(str(exc))})")


def mark_in_progress(
    state: DryRunState, gate_document: Callable[[DryRunState], dict[str, Any]]
) -> None:
    """gate.json says NO-GO "run <id> in progress since <time>" from the run's first request on,
    so a run killed before its verdict never leaves an older run's GO for CI to read. No
    snapshot: verify-evidence fails while the run is in progress, and after a killed one."""
    reason = f"run {state.run_id} in progress since {iso_z(datetime.now(UTC))}"
    steps = tuple(
        StepResult(step, "not-run", "not run yet: the run is in progress")
        for step in REQUIRED_STEPS
    )
    saved = state.verdict
    state.verdict = Verdict(go=False, steps=steps, reasons=(reason,))
    try:
        doc = gate_document(state)
    finally:
        state.verdict = saved
    doc["run_id"] = state.run_id
    doc["in_progress"] = True
    try:
        writer_for(state).write_json(GATE_RELPATH, doc)
    except Exception as exc:  # last resort: the verdict's own write names the problem again
        state.terminal_notes.append(
            f"gate.json could not be marked in progress ({type(exc).__name__}: "
            f"{first_line(str(exc))})"
        )


def finish_html(state: DryRunState) -> None:
    """Copy pytest-html's report into audit/ through the writer (redacted): into this run's
    reserved dated name, and as the latest."""
    source = state.html_temp_path
    reserved = state.report_reserved
    if source is None or not source.is_file():
        if reserved is not None and reserved.is_file() and reserved.stat().st_size == 0:
            reserved.unlink()  # the empty reservation of a report that never came
        return
    writer = writer_for(state)
    run_at = state.run_at
    data = source.read_bytes()  # the writer redacts HTML reports value by value
    if state.verdict is not None:
        data = _with_banner(state, data)
    try:
        if reserved is not None:
            dated = writer.write_bytes(writer.relpath(reserved), data)
        else:
            dated = writer.write_new(report_relpath(run_at), data)
        writer.write_bytes(LATEST_REPORT_RELPATH, data)
    except (OSError, EvidenceError) as exc:
        # Written after the verdict (pytest-html writes its file last): a report that cannot be
        # copied (a full disk) is said, and pytest-html's own copy is kept, never a traceback.
        # The verdict stands on what is on disk: gate.json, the smoke log, summary and notes,
        # and a run whose other evidence failed is NO-GO already.
        if reserved is not None and reserved.is_file() and reserved.stat().st_size == 0:
            with contextlib.suppress(OSError):
                reserved.unlink()
        state.terminal_notes.append(
            f"the HTML report could not be written into the audit folder "
            f"({type(exc).__name__}: {first_line(str(exc))}); pytest-html's copy is kept at "
            f"{source} (free space in the audit folder and copy it there)"
        )
        state.artefacts.pop("report", None)
        state.html_temp_kept = True
        return
    with contextlib.suppress(Exception):
        write_manifest(writer, f"{dated.stem}", [writer.relpath(dated)])
    state.artefacts["report"] = dated


def _with_banner(state: DryRunState, data: bytes) -> bytes:
    """pytest-html's report with the verdict banner (and its pictures) at the very top."""
    from cron_dryrun.evidence.html_report import banner_html, insert_banner
    from cron_dryrun.session.reporting import ledger_points, report_view

    banner = banner_html(report_view(state, ledger_points(state)))
    return insert_banner(data.decode("utf-8"), banner).encode("utf-8")


def github_step_summary(state: DryRunState) -> str:
    """The verdict table for ``$GITHUB_STEP_SUMMARY`` (Markdown, redacted)."""
    from cron_dryrun.session.github_actions import step_summary

    assert state.verdict is not None
    writer = writer_for(state)
    run_at = state.run_at
    links = {name: _relpath_or_none(writer, path) for name, path in state.artefacts.items()}
    return step_summary(
        state.verdict,
        target=describe(state),
        method=state.settings.cron_method,
        run_at=iso(run_at),
        dry_run=(state.dry_run_status or {}).get("description"),
        artefacts={name: rel for name, rel in links.items() if rel is not None},
        redact=lambda text: escape_controls(writer.redactor.redact(text)),
        root_cause=_cause_and_fix(state),
    )


def _cause_and_fix(state: DryRunState) -> tuple[str, str] | None:
    cause = state.root_cause
    return (cause.cause, cause.fix) if cause is not None else None


def append_github_step_summary(state: DryRunState) -> None:
    """Append the verdict table to ``$GITHUB_STEP_SUMMARY`` (GitHub's file; others' text kept)."""
    path = state.settings.github_step_summary
    if not state.settings.github_actions or path is None:
        return
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(github_step_summary(state))
    except OSError as exc:
        state.terminal_notes.append(f"GITHUB_STEP_SUMMARY could not be written: {path}: {exc}")


def github_annotations(state: DryRunState) -> list[str]:
    """One ``::error title=<check>::<reason>`` per failed check, redacted (GitHub Actions only)."""
    from cron_dryrun.session.github_actions import error_annotations

    if not state.settings.github_actions or state.verdict is None:
        return []
    redact = writer_for(state).redactor.redact
    return error_annotations(
        state.verdict, lambda text: escape_controls(redact(text)), root_cause=_cause_and_fix(state)
    )
