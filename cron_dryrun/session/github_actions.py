"""The verdict as GitHub Actions shows it: a Markdown step summary and one annotation per
failed check. Pure text; the plugin appends the summary to ``$GITHUB_STEP_SUMMARY`` and prints
the annotations (workflow commands) when ``GITHUB_ACTIONS=true``.

Workflow command escaping (GitHub's toolkit): in the message ``%``, CR and LF are
percent-encoded; in a property (``title=``) also ``:`` and ``,``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from cron_dryrun.rules.gate import PASSED, Verdict

STATUS_MARK = {PASSED: "✅", "not-run": "⚪"}


def escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _no_redaction(text: str) -> str:
    return text


def error_annotations(
    verdict: Verdict,
    redact: Callable[[str], str] = _no_redaction,
    root_cause: tuple[str, str] | None = None,
) -> list[str]:
    """``::error title=<check>::<reason>``: the root cause and its fix first (when there is
    one), then one per failed check, then one per other reason (the promotion gate, a
    configuration error), each redacted."""
    lines = []
    if root_cause is not None:
        cause, fix = root_cause
        message = f"{cause}. Fix: {fix}"
        lines.append(f"::error title=root cause::{escape_data(redact(message))}")
    step_reasons = set()
    for step in verdict.steps:
        if step.status == PASSED:
            continue
        step_reasons.add(f"{step.step}: {step.status} - {step.reason}")
        message = f"{step.status}: {step.reason}"
        lines.append(f"::error title={escape_property(step.step)}::{escape_data(redact(message))}")
    for reason in verdict.reasons:
        if reason in step_reasons:
            continue
        title = reason.split(":", 1)[0] if ":" in reason else "cron-dryrun gate"
        lines.append(
            f"::error title={escape_property(redact(title))}::{escape_data(redact(reason))}"
        )
    return lines


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def step_summary(
    verdict: Verdict,
    *,
    target: str,
    method: str,
    run_at: str,
    dry_run: str | None,
    artefacts: Mapping[str, str],
    notes: Sequence[str] = (),
    redact: Callable[[str], str] = _no_redaction,
    root_cause: tuple[str, str] | None = None,
) -> str:
    """The verdict, then (as the terminal leads) the root cause and its fix, then the table, as
    GitHub-flavoured Markdown, redacted, ending with a blank line."""
    icon = "🟢" if verdict.go else "🔴"
    lines = [
        f"## {icon} cron-dryrun gate: {verdict.label}",
        "",
        f"Target: `{_cell(target)}` · method {method} · run at {run_at}",
        "",
    ]
    if root_cause is not None:
        cause, fix = root_cause
        lines += [f"**Root cause:** {_cell(cause)}", "", f"**Fix:** {_cell(fix)}", ""]
    if dry_run:
        lines += [f"48-hour dry run: {_cell(dry_run)}", ""]
    lines += ["| check | status | reason |", "| --- | --- | --- |"]
    for step in verdict.steps:
        mark = STATUS_MARK.get(step.status, "❌")
        lines.append(f"| {step.step} | {mark} {step.status} | {_cell(step.reason)} |")
    step_lines = {f"{s.step}: {s.status} - {s.reason}" for s in verdict.steps}
    others = [r for r in verdict.reasons if r not in step_lines]
    if others:
        lines += ["", *[f"- **{_cell(r)}**" for r in others]]
    if notes:
        lines += ["", *[f"- {_cell(n)}" for n in notes]]
    if artefacts:
        lines += ["", "<details><summary>Evidence (audit/)</summary>", ""]
        lines += [f"- {name}: `{path}`" for name, path in sorted(artefacts.items())]
        lines += ["", "</details>"]
    return redact("\n".join(lines)) + "\n\n"
