"""notes-<date>.md: the day's facts and one block per run, in the built-in layout or in
the shape of the folder's ``notes-template.md``; operator comments are kept.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from cron_dryrun.evidence.paths import DRY_RUN_DIR, _utc, iso_z, notes_relpath
from cron_dryrun.evidence.summary import (
    _RUN_MARK,
    RunFacts,
    _artefact_links,
    _headers,
    _issues,
    _link,
    _manual_fallback,
    _num,
    _one_line,
    _verdict_line,
    run_end_mark,
    run_start_mark,
)
from cron_dryrun.evidence.writer import EvidenceWriter

# -- notes-<date>.md ------------------------------------------------------------------------------

FACTS_START = "<!-- cron-dryrun:facts:start (generated: rewritten by each run of the day) -->"
FACTS_END = "<!-- cron-dryrun:facts:end -->"
OPERATOR_HEADING = "## Operator comments"
OPERATOR_HINT = (
    "<!-- Write below; cron-dryrun keeps this section verbatim when it rewrites the facts. -->"
)


def _notes_key(facts: RunFacts) -> str:
    return facts.run_id or iso_z(facts.run_at)


def _notes_block(facts: RunFacts) -> str:
    key = _notes_key(facts)
    follow = [_one_line(f) for f in facts.follow_ups] or ["none"]
    notable = [_one_line(n) for n in facts.notable] or ["none"]
    expected = "unknown" if facts.expected_windows is None else str(facts.expected_windows)
    lines = [
        f"<!-- cron-dryrun:run {key} -->",
        f"### Run {key} — {_one_line(facts.label)}",
        "",
        f"- Run timestamp: {key}",
        f"- Target: {_one_line(facts.target)}",
        f"- Trigger mode: {_one_line(facts.trigger)}",
        f"- Flag state: flags.enableDailyUsageWindows {_one_line(facts.flag_state)}",
        f"- Windows processed: {_num(facts.windows_processed)} (expected {expected})",
        f"- Updated events: {_num(facts.updated_events)}",
        f"- Issues by code: {_issues(facts.issues_by_code)}",
        f"- Retry-After headers: {_headers(facts.throttling_headers)}",
        f"- Manual fallback usage: {_manual_fallback(facts.manual_fallback)}",
        "- Notable logs:",
        *(f"  - {n}" for n in notable),
        f"- Parity diff result: {_one_line(facts.parity_result)}",
        "- Follow-ups:",
        *(f"  - [ ] {f}" if f != "none" else "  - none" for f in follow),
        f"- Verdict: {_verdict_line(facts)}",
        f"- Artefacts: {_artefact_links(facts, DRY_RUN_DIR)}",
        *([run_end_mark(key)] if facts.run_id else []),
        "",
    ]
    return "\n".join(lines)


def _split_blocks(region: str) -> list[tuple[str, str]]:
    marks = list(_RUN_MARK.finditer(region))
    blocks = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(region)
        blocks.append((m.group("key"), region[m.start() : end].rstrip("\n") + "\n"))
    return blocks


def render_notes(
    facts: RunFacts, existing: str | None, redact: Callable[[str], str] = lambda t: t
) -> str:
    """notes-<date>.md with this run's facts; everything outside the generated region is kept.

    One facts block per run of the day, newest first (a rerun of the same
    run time replaces its block). The operator comments, and anything else
    outside the markers, are kept byte for byte. A hand-written notes file
    without markers becomes the operator comments of the generated one.
    """
    block = redact(_notes_block(facts))
    key = _notes_key(facts)
    replaced = _with_block(existing, key, block)
    if replaced is not None:
        return replaced
    day = _utc(facts.run_at).date().isoformat()
    comments = existing if existing else ""
    if comments and not comments.endswith("\n"):
        comments += "\n"
    head = redact(
        f"# Operator notes — {day}\n\nDaily usage cron dry run, {_one_line(facts.target)}.\n\n"
    )
    return (
        f"{head}{FACTS_START}\n{block}{FACTS_END}\n\n"
        f"{OPERATOR_HEADING}\n\n{OPERATOR_HINT}\n\n{comments}"
    )


NOTES_TEMPLATE_RELPATH = f"{DRY_RUN_DIR}/notes-template.md"
_BOLD_BULLET = re.compile(r"^- \*\*(?P<label>[^*]+)\*\*:[ \t]*(?P<value>.*)$")


def template_bullets(template: str) -> list[str]:
    """The bold-label bullets (``- **Label**: [...]``) of a notes template, in order."""
    return [line for line in template.splitlines() if _BOLD_BULLET.match(line)]


def _template_values(facts: RunFacts) -> dict[str, str]:
    """The template's bold labels (lower case) -> this run's value."""
    expected = "unknown" if facts.expected_windows is None else str(facts.expected_windows)
    parity = _one_line(facts.parity_result)
    if facts.diff_report:
        parity += f" ({_link(DRY_RUN_DIR, facts.diff_report, 'diff JSON')})"
    return {
        "run timestamp (utc)": iso_z(facts.run_at),
        "trigger mode": f"{_one_line(facts.trigger)} (cron-dryrun)",
        "feature flag state": f"flags.enableDailyUsageWindows {_one_line(facts.flag_state)}",
        "windows processed": f"{_num(facts.windows_processed)} (expected {expected})",
        "updated events": _num(facts.updated_events),
        "issues by code": _issues(facts.issues_by_code),
        "retry-after headers": _headers(facts.throttling_headers),
        "manual fallback usage": _manual_fallback(facts.manual_fallback),
        "notable logs": "; ".join(_one_line(n) for n in facts.notable) or "none",
        "parity diff result": parity,
        "follow-ups": "; ".join(_one_line(f) for f in facts.follow_ups) or "none",
    }


def _template_block(facts: RunFacts, bullets: Sequence[str]) -> str:
    """One run's block: the template's bold-label bullets with this run's values, keyed
    and framed by the run's markers like the built-in block."""
    key = _notes_key(facts)
    values = _template_values(facts)
    lines = [run_start_mark(key), f"### Run {key} — {_one_line(facts.label)}", ""]
    for bullet in bullets:
        m = _BOLD_BULLET.match(bullet)
        if m is None:
            continue
        value = values.get(m.group("label").strip().lower(), m.group("value"))
        lines.append(f"- **{m.group('label')}**: {value}")
    lines.append(f"- **Target**: {_one_line(facts.target)}")
    lines.append(f"- **Verdict**: {_verdict_line(facts).replace('**', '')}")
    lines.append(f"- **Artefacts**: {_artefact_links(facts, DRY_RUN_DIR)}")
    if facts.run_id:
        lines.append(run_end_mark(key))
    lines.append("")
    return "\n".join(lines)


def render_notes_from_template(
    facts: RunFacts,
    existing: str | None,
    template: str,
    redact: Callable[[str], str] = lambda text: text,
) -> str:
    """notes-<date>.md in the shape of the app's ``notes-template.md``.

    The template's bold-label bullets are filled in, one block per run of the day inside
    the generated markers (newest first, keyed by run id); the rest of the template (its
    title, its "operator comments" checklist) is kept once, and everything an operator
    wrote outside the markers is kept byte for byte on reruns. Only what this run adds is
    redacted (``redact``).
    """
    block = redact(_template_block(facts, template_bullets(template)))
    key = _notes_key(facts)
    replaced = _with_block(existing, key, block)
    if replaced is not None:
        return replaced
    day = _utc(facts.run_at).date().isoformat()
    out: list[str] = []
    placed = False
    for line in template.splitlines():
        if _BOLD_BULLET.match(line):
            if not placed:
                out.append(f"{FACTS_START}\n{block}{FACTS_END}")
                placed = True
            continue
        if line.startswith("#") and "(Template)" in line:
            out.append(line.replace("(Template)", f"— {day}"))
        elif line.startswith(">"):
            continue  # the template's instruction to copy it: done
        else:
            out.append(line)
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    text += "\n"
    if existing:  # a hand-written notes file without markers: kept, as the operator comments
        text += f"\n{existing if existing.endswith(chr(10)) else existing + chr(10)}"
    return text


def notes_template(writer: EvidenceWriter) -> str | None:
    """``cron-dry-run/notes-template.md`` when it exists and has bold-label bullets to fill."""
    path = writer.path(NOTES_TEMPLATE_RELPATH)
    if not path.is_file() or path.is_symlink():
        return None
    template = path.read_text(encoding="utf-8", errors="replace")
    return template if template_bullets(template) else None


def update_notes(writer: EvidenceWriter, facts: RunFacts) -> Path:
    """This run's block in the day's notes: in the shape of ``notes-template.md`` when the
    folder has one, else the built-in layout. Only the block is redacted."""
    template = notes_template(writer)
    redact = writer.redactor.redact
    rel = notes_relpath(facts.run_at)
    if template is None:
        return writer.update_locked(
            rel, lambda old: render_notes(facts, old or None, redact), redact_all=False
        )
    return writer.update_locked(
        rel,
        lambda old: render_notes_from_template(facts, old or None, template, redact),
        redact_all=False,
    )


def _with_block(existing: str | None, key: str, block: str) -> str | None:
    """``existing`` with this run's block in its generated region (newest first, a rerun's block
    replaced); None when the file has no generated region yet."""
    if not existing or FACTS_START not in existing:
        return None
    before, rest = existing.split(FACTS_START, 1)
    if FACTS_END not in rest:
        return None
    region, after = rest.split(FACTS_END, 1)
    blocks = [(k, b) for k, b in _split_blocks(region) if k != key]
    blocks = sorted([(key, block), *blocks], key=lambda kb: kb[0], reverse=True)
    body = "\n".join(b for _, b in blocks)
    return f"{before}{FACTS_START}\n{body}{FACTS_END}{after}"
