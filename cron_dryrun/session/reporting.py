"""End-of-run views of the session: gate.json's document, the terminal table, the HTML verdict.

Called by the plugin's session hooks; ``session.finish`` writes them, every file through
the evidence writer.
"""

from __future__ import annotations

import platform
import textwrap
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest

from cron_dryrun import __version__
from cron_dryrun.exchange.record import short_problem
from cron_dryrun.rules.gate import REQUIRED_STEPS
from cron_dryrun.rules.root_cause import RootCause, advice_for
from cron_dryrun.session.terminal import terminal_writer
from cron_dryrun.target.watch import exchange_durations
from cron_dryrun.windows import iso, scope_range

if TYPE_CHECKING:
    from cron_dryrun.session.state import DryRunState


def versions() -> dict[str, str]:
    return {
        "cron_dryrun": __version__,
        "python": platform.python_version(),
        "pytest": pytest.__version__,
    }


def describe_target(state: DryRunState) -> str:
    target = state.target
    if target is None:
        return state.settings.target_name
    if target.is_local:
        return f"local stack ({target.backend}; fault {state.settings.fault})"
    return target.cron_url


def gate_document(state: DryRunState) -> dict[str, Any]:
    """audit/gate.json, as schemas/gate.schema.json describes it."""
    verdict = state.verdict
    assert verdict is not None
    run_at = state.run_at
    window = scope_range(run_at)
    checks = []
    for outcome in sorted(
        state.outcomes.values(), key=lambda o: (list(REQUIRED_STEPS).index(o.step), o.nodeid)
    ):
        checks.append(
            {
                "name": outcome.step,
                "nodeid": outcome.nodeid,
                "status": outcome.status,
                "reason": outcome.reason,
                "required": True,
            }
        )
    not_run = set(verdict.not_run)
    for step_name, ids in sorted(
        state.collected.items(), key=lambda kv: list(REQUIRED_STEPS).index(kv[0])
    ):
        for nodeid in sorted(ids & not_run):
            checks.append(
                {
                    "name": step_name,
                    "nodeid": nodeid,
                    "status": "not-run",
                    "reason": "collected but not run (deselected, or the run stopped early)",
                    "required": True,
                }
            )
    for step in verdict.steps:
        if step.status == "not-run" and not (state.collected.get(step.step, set()) & not_run):
            checks.append(
                {
                    "name": step.step,
                    "nodeid": None,
                    "status": "not-run",
                    "reason": step.reason,
                    "required": True,
                }
            )
    cause = state.root_cause
    doc: dict[str, Any] = {
        "verdict": verdict.label,
        "reasons": led_by_root_cause(state),
        "steps": [{"name": s.step, "status": s.status, "reason": s.reason} for s in verdict.steps],
        "checks": checks,
        "target": describe_target(state),
        "run_at": iso(run_at),
        "window_range": {"start": iso(window.start), "end": iso(window.end)},
        "versions": versions(),
        "promotion_gate": state.settings.promotion_gate,
        "method": state.settings.cron_method,
        "label": state.settings.run_label,
        "partial": verdict.partial,
    }
    if cause is not None:
        doc["root_cause"] = cause.to_json()
    if state.dry_run_status is not None:
        doc["dry_run"] = state.dry_run_status
    return doc


def led_by_root_cause(state: DryRunState) -> list[str]:
    """The verdict's reasons, the root cause and its fix first, its consequences marked."""
    verdict = state.verdict
    assert verdict is not None
    cause = state.root_cause
    if cause is None:
        return list(verdict.reasons)
    lead = f"root cause: {cause.cause}; fix: {cause.fix}"
    marked = []
    for reason in verdict.reasons:
        step = reason.split(":", 1)[0]
        marked.append(
            f"{reason} (consequence of the root cause)" if step in cause.consequences else reason
        )
    return [lead, *marked]


def print_terminal_summary(tr: Any, state: DryRunState, annotations: list[str]) -> None:
    """The verdict table, then ``annotations`` (GitHub workflow commands) each on its own line."""
    verdict = state.verdict
    assert verdict is not None
    tr.section(
        f"cron-dryrun gate: {verdict.label}",
        sep="=",
        bold=True,
        green=verdict.go,
        red=not verdict.go,
    )
    tr.line(f"target: {describe_target(state)}   method: {state.settings.cron_method}")
    if state.config_error and not state.triggered:
        _print_configuration_error(tr, state, len(verdict.steps), annotations)
        return
    cause = state.root_cause
    if cause is not None:
        for i, line in enumerate(cause.lines()):
            tr.line(line, bold=i == 0, red=i == 0)
    for line in verdict_table_lines(verdict.steps, cause, _terminal_width(tr)):
        tr.line(line)
    if state.transcripts:
        tr.line(f"exchanges: {exchange_durations(state.transcripts)}")
    for line in state.terminal_notes:
        tr.line(line)
    for name, path in sorted(state.artefacts.items()):
        tr.line(f"  {name}: {path}")
    tr.line(f"verdict: {verdict.label}", bold=True, green=verdict.go, red=not verdict.go)
    for annotation in annotations:
        tr.line(annotation)  # a workflow command: GitHub reads it from the start of a line


def _print_configuration_error(
    tr: Any, state: DryRunState, steps: int, annotations: list[str]
) -> None:
    """A run stopped before anything was sent: the error first, then one line for what did not
    run (no table: every row would say the same, with advice that does not apply)."""
    assert state.config_error is not None
    first = state.config_error.strip().splitlines()[0]
    tr.line(f"configuration error: {first}", bold=True, red=True)
    tr.line(f"not run: all {steps} gate steps (nothing was triggered; the full message follows)")
    for name, path in sorted(state.artefacts.items()):
        tr.line(f"  {name}: {path}")
    tr.line("verdict: NO-GO", bold=True, red=True)
    for annotation in annotations:
        tr.line(annotation)


def _terminal_width(tr: Any) -> int:
    width = getattr(terminal_writer(tr), "fullwidth", 0) or 0
    return max(int(width), 80)


def verdict_table_lines(steps: Any, cause: RootCause | None, width: int) -> list[str]:
    """The step table: reasons wrapped under their column, never cut; what to do per failure.

    A failure that follows from the root cause is marked as such and needs no advice of
    its own (the fix above is the advice).
    """
    name_width = max(len(s) for s in REQUIRED_STEPS)
    indent = 2 + 3 + name_width + 2 + 8 + 2
    room = max(width - indent - 1, 30)
    out = []
    for step in steps:
        mark = "ok " if step.status == "passed" else "!! "
        reason = step.reason
        consequence = cause is not None and step.step in cause.consequences
        if consequence:  # the cause is printed in full once, above: its first clause here
            reason = f"{short_problem(reason, 1000)} [consequence of the root cause]"
        wrapped = textwrap.wrap(reason, room, break_long_words=False, break_on_hyphens=False)
        wrapped = wrapped or [""]
        out.append(f"  {mark}{step.step:<{name_width}}  {step.status:<8}  {wrapped[0]}")
        out.extend(" " * indent + line for line in wrapped[1:])
        advice = advice_for(step.step, step.reason)
        if step.status != "passed" and not consequence and advice:
            out.extend(" " * indent + line for line in textwrap.wrap(f"what to do: {advice}", room))
    return out


def ledger_points(state: DryRunState) -> list[Any]:
    """The 48-hour timeline's points: this target's ledger entries the gate counts (the suite's
    own lines: evidence.trust), as the file holds them now (the run's own line is in once the
    run's evidence is written). None readable: none."""
    import contextlib

    from cron_dryrun.evidence import ledger
    from cron_dryrun.evidence.html_report import LedgerPoint
    from cron_dryrun.evidence.trust import evidence_key, judge_ledger

    with contextlib.suppress(Exception):  # an unreadable ledger: the timeline shows none
        trusted = judge_ledger(state.settings.audit_dir, key=evidence_key())
        return [
            LedgerPoint(e.time, e.green, e.label)
            for e in ledger.entries_for(trusted.counted, state.settings.target_name)
        ]
    return []


def report_view(state: DryRunState, ledger_points: Any = (), now: datetime | None = None) -> Any:
    """What the HTML banner shows (html_report.ReportView), from the session's state."""
    from cron_dryrun.evidence.html_report import ParityDay, ReportView, StepRow

    verdict = state.verdict
    assert verdict is not None
    parity = state.records.get("parity") or {}
    status = state.dry_run_status or {}
    next_due = status.get("next_due")
    return ReportView(
        verdict=verdict.label,
        target=describe_target(state),
        method=state.settings.cron_method,
        generated=iso(now or datetime.now(UTC)),
        steps=[StepRow(s.step, s.status, s.reason) for s in verdict.steps],
        root_cause=state.root_cause.to_json() if state.root_cause else None,
        config_error=state.config_error,
        dry_run=str(status.get("description", "")) or None,
        ledger=tuple(ledger_points),
        now=now or datetime.now(UTC),
        next_due=(
            (datetime.fromisoformat(next_due[0]), datetime.fromisoformat(next_due[1]))
            if next_due
            else None
        ),
        parity_days=tuple(ParityDay(**d) for d in parity.get("days", [])),
        warnings=tuple(f"parity: {w}" for w in parity.get("warnings", [])),
        exchanges=exchange_durations(state.transcripts) if state.transcripts else None,
    )


def html_verdict_block(state: DryRunState) -> list[str]:
    """The verdict banner inside the pytest-html summary, for a report at the operator's own
    --html path (the suite's own report gets it at the very top, see session.finish)."""
    verdict = state.verdict
    if verdict is None:
        return ["<p><strong>Gate verdict:</strong> pending (the run has not finished)</p>"]
    from cron_dryrun.evidence.html_report import banner_html

    return [banner_html(report_view(state, ledger_points(state)))]
