"""summary.md: what one run found (``RunFacts``) and its entry at the top of ``## Runs``, in
the suite's form or the app's hand-written one; every other byte of the file is kept.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from cron_dryrun.evidence.paths import DRY_RUN_DIR, SUMMARY_RELPATH, _utc, iso_z
from cron_dryrun.evidence.writer import EvidenceWriter

SUMMARY_TITLE = "# Daily usage cron dry run — summary"


# -- run facts and the summary entry --------------------------------------------------------------


@dataclass(frozen=True)
class RunFacts:
    """What one run found, in the words of summary.md and the notes. Plain data.

    Artefact paths (smoke_log, diff_report, report) are relative to the audit folder.
    """

    run_at: datetime
    label: str
    target: str
    method: str
    request: str  # one line, e.g. "POST https://host/api/cron/daily-usage -> 200 OK in 1.23s"
    windows_processed: int | None
    expected_windows: int | None
    stored_events: int | None
    updated_events: int | None
    issues_by_code: Mapping[str, int]
    throttling_headers: Mapping[str, str]
    manual_fallback: Mapping[str, int]  # manualFallbackInserts/Updates/Windows/Keys as found
    flag_state: str  # as found: "true", "false", "missing", '"true" (a string)'
    verdict: str  # "GO" or "NO-GO"
    checks: Sequence[tuple[str, str, str]] = ()  # (name, status, reason)
    smoke_log: str | None = None
    diff_report: str | None = None
    report: str | None = None
    body_json: str | None = None
    notable: Sequence[str] = ()
    follow_ups: Sequence[str] = ()
    parity_result: str = "not run"
    trigger_mode: str | None = None  # default: derived from method
    run_id: str | None = None  # keys this run's summary entry, notes block and manifest
    # the one cause behind several failures: (cause, fix, the checks failing because of it)
    root_cause: tuple[str, str, tuple[str, ...]] | None = None
    exchanges: str | None = None  # every exchange's status and duration (watch.exchange_durations)

    @property
    def trigger(self) -> str:
        if self.trigger_mode:
            return self.trigger_mode
        if self.method.upper() == "POST":
            return "manual trigger, POST as the runbook's curl command"
        return f"{self.method.upper()} as the platform scheduler calls it"


def telemetry_of(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """body["telemetry"] when it is an object, else {} (helper for building RunFacts)."""
    telemetry = body.get("telemetry") if isinstance(body, Mapping) else None
    return dict(telemetry) if isinstance(telemetry, Mapping) else {}


def manual_fallback_of(body: Mapping[str, Any] | None) -> dict[str, int]:
    return {k: v for k, v in telemetry_of(body).items() if k.startswith("manualFallback")}


def flag_state_of(body: Mapping[str, Any] | None) -> str:
    """flags.enableDailyUsageWindows as found: true, false, missing, or the odd value shown."""
    flags = body.get("flags") if isinstance(body, Mapping) else None
    if not isinstance(flags, Mapping) or "enableDailyUsageWindows" not in flags:
        return "missing"
    value = flags["enableDailyUsageWindows"]
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{json.dumps(value)} (not a JSON boolean)"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _num(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _issues(issues: Mapping[str, int]) -> str:
    if not issues:
        return "none"
    return ", ".join(f"`{_one_line(k)}`: {_one_line(v)}" for k, v in sorted(issues.items()))


def _headers(headers: Mapping[str, str]) -> str:
    if not headers:
        return "none"
    return ", ".join(f"`{_one_line(k)}: {_one_line(v)}`" for k, v in headers.items())


def _manual_fallback(values: Mapping[str, int]) -> str:
    if not values:
        return "not reported"
    text = ", ".join(f"{k} {v}" for k, v in sorted(values.items()))
    used = any(isinstance(v, int | float) and v > 0 for v in values.values())
    return text + (" (writes went through the manual fallback path)" if used else "")


def _verdict_line(facts: RunFacts) -> str:
    bad = [c for c in facts.checks if c[1] != "passed"]
    if not bad:
        return f"**{facts.verdict}**"
    if facts.root_cause is not None:
        cause, fix, consequences = facts.root_cause
        others = [c for c in bad if c[0] not in consequences]
        rest = "; ".join(
            f"{name} {status}" + (f": {_one_line(reason)}" if reason else "")
            for name, status, reason in others
        )
        return (
            f"**{facts.verdict}**: root cause: {_one_line(cause)}; fix: {_one_line(fix)} "
            f"(failing because of it: {', '.join(consequences)})"
            + (f"; also {rest}" if rest else "")
        )
    listed = "; ".join(
        f"{name} {status}" + (f": {_one_line(reason)}" if reason else "")
        for name, status, reason in bad
    )
    return f"**{facts.verdict}** ({listed})"


def _link(from_dir: str, target: str, text: str) -> str:
    rel = posixpath.relpath(target, from_dir) if from_dir else target
    return f"[{text}]({quote(rel, safe='/.-_~')})"


def _fenced(body: str, lang: str) -> str:
    """A code fence longer than any backtick run in ``body`` (a body cannot close it early)."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body.rstrip()}\n{fence}\n"


def _pretty_body(body_json: str | None) -> str:
    if body_json is None:
        return "(no JSON body)"
    try:
        return json.dumps(json.loads(body_json), indent=2, ensure_ascii=False)
    except ValueError:
        return body_json


def _artefact_links(facts: RunFacts, from_dir: str) -> str:
    links = []
    if facts.smoke_log:
        links.append(_link(from_dir, facts.smoke_log, "smoke log"))
    if facts.diff_report:
        links.append(_link(from_dir, facts.diff_report, "diff JSON"))
    if facts.report:
        links.append(_link(from_dir, facts.report, "HTML report"))
    return " · ".join(links) if links else "none"


def run_start_mark(run_id: str) -> str:
    return f"<!-- cron-dryrun:run {run_id} -->"


def run_end_mark(run_id: str) -> str:
    return f"<!-- cron-dryrun:end {run_id} -->"


def run_block(text: str, run_id: str) -> str | None:
    """The block a run wrote into summary.md or a notes file, markers included; None if absent."""
    start = text.find(run_start_mark(run_id) + "\n")
    if start < 0:
        return None
    end_mark = run_end_mark(run_id) + "\n"
    end = text.find(end_mark, start)
    return text[start : end + len(end_mark)] if end >= 0 else None


def ledger_line(text: str, run_id: str) -> str | None:
    """The ledger line of ``run_id`` (without its newline); None if absent."""
    needle = f'"run_id": {json.dumps(run_id)}'
    for line in text.splitlines():
        if needle in line:
            return line
    return None


def render_summary_entry(facts: RunFacts, style: str = "suite") -> str:
    """One summary.md entry: ``#### <UTC time> — <label>``, the bullets, the JSON body.

    ``style="app"``: the form of the app's hand-written entries instead
    (``render_app_summary_entry``; ``summary_entry_style`` tells which a summary uses).
    With a run id, the entry is framed by ``<!-- cron-dryrun:run/end <id> -->``
    so its manifest can checksum exactly these bytes (HTML comments: invisible
    when the Markdown is rendered).
    """
    body = render_app_summary_entry(facts) if style == "app" else _summary_entry_body(facts)
    if not facts.run_id:
        return body
    return f"{run_start_mark(facts.run_id)}\n{body.rstrip()}\n{run_end_mark(facts.run_id)}\n"


# an entry heading as the app's hand-written summary has them: #### 2025-10-08T20:04Z (Smoke Test)
_APP_ENTRY = re.compile(r"^####[ \t]+\d{4}-\d\d-\d\dT\d\d:\d\dZ[ \t]+\(.*\)[ \t]*$")


def summary_entry_style(existing: str) -> str:
    """ "app" when the summary's entries are the app's hand-written form, else "suite"."""
    lines = existing.splitlines()
    plain = _outside_fences(lines)
    if any(plain[i] and _APP_ENTRY.match(line) for i, line in enumerate(lines)):
        return "app"
    return "suite"


def render_app_summary_entry(facts: RunFacts) -> str:
    """An entry in the app's own form: ``#### <time to the minute> (<label>)`` and its seven
    plain bullets (Request, Windows processed, Updated events, Issues by code, Retry-After
    headers, Notes, Artefacts), then the JSON body; what else the suite knows goes into
    Notes."""
    expected = "unknown" if facts.expected_windows is None else str(facts.expected_windows)
    minute = _utc(facts.run_at).strftime("%Y-%m-%dT%H:%MZ")
    notes = [
        f"cron-dryrun verdict {_verdict_line(facts).replace('**', '')}",
        f"run time {iso_z(facts.run_at)}",
        f"flag state `flags.enableDailyUsageWindows` {_one_line(facts.flag_state)}",
        f"stored events {_num(facts.stored_events)}",
        f"manual fallback {_manual_fallback(facts.manual_fallback)}",
        f"target {_one_line(facts.target)}",
        *([f"exchanges {_one_line(facts.exchanges)}"] if facts.exchanges else []),
        f"parity {_one_line(facts.parity_result)}",
        *(_one_line(n) for n in facts.notable),
        *(f"follow-up: {_one_line(f)}" for f in facts.follow_ups),
    ]
    label = _one_line(facts.label).replace("(", "[").replace(")", "]")
    lines = [
        f"#### {minute} ({label})",
        f"- Request: {_one_line(facts.request)}",
        f"- Windows processed: {_num(facts.windows_processed)} (expected {expected})",
        f"- Updated events: {_num(facts.updated_events)}",
        f"- Issues by code: {_issues(facts.issues_by_code)}",
        f"- Retry-After headers: {_headers(facts.throttling_headers)}",
        f"- Notes: {'; '.join(notes)}",
        f"- Artefacts: {_artefact_links(facts, DRY_RUN_DIR)}",
        "",
        _fenced(_pretty_body(facts.body_json), "json"),
    ]
    return "\n".join(lines)


def _summary_entry_body(facts: RunFacts) -> str:
    notes = [*facts.notable, *(f"follow-up: {f}" for f in facts.follow_ups)]
    expected = "unknown" if facts.expected_windows is None else str(facts.expected_windows)
    lines = [
        f"#### {iso_z(facts.run_at)} — {_one_line(facts.label)}",
        "",
        f"- **Request:** {_one_line(facts.request)}",
        f"- **Target:** {_one_line(facts.target)}",
        *([f"- **Exchanges:** {_one_line(facts.exchanges)}"] if facts.exchanges else []),
        f"- **Windows processed:** {_num(facts.windows_processed)} (expected {expected})",
        f"- **Stored events:** {_num(facts.stored_events)}",
        f"- **Updated events:** {_num(facts.updated_events)}",
        f"- **Issues by code:** {_issues(facts.issues_by_code)}",
        f"- **Retry-After/throttling headers:** {_headers(facts.throttling_headers)}",
        f"- **Manual fallback:** {_manual_fallback(facts.manual_fallback)}",
        f"- **Flag state:** `flags.enableDailyUsageWindows` {_one_line(facts.flag_state)}",
        f"- **Verdict:** {_verdict_line(facts)}",
        f"- **Notes:** {'; '.join(_one_line(n) for n in notes) if notes else 'none'}",
        f"- **Artefacts:** {_artefact_links(facts, DRY_RUN_DIR)}",
        "",
        _fenced(_pretty_body(facts.body_json), "json"),
    ]
    return "\n".join(lines)


_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_RUNS_HEADING = re.compile(r"^##[ \t]+Runs[ \t]*$")
_SECTION_END = re.compile(r"^#{1,2}[ \t]")
_ENTRY_HEADING = re.compile(r"^#{3,4}[ \t]")


def _outside_fences(lines: list[str]) -> list[bool]:
    """For each line: True when it is not inside a fenced code block (JSON bodies are)."""
    result = []
    fence: str | None = None
    for line in lines:
        m = _FENCE.match(line)
        if fence is None:
            result.append(True)
            if m:
                fence = m.group(1)
        else:
            result.append(False)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
    return result


def insert_run_entry(existing: str, entry: str) -> str:
    """``entry`` at the top of ``## Runs`` (newest first); every other byte stays as it was.

    "Top" means before the first ``###``/``####`` entry heading of the section,
    so an operator's intro text under ``## Runs`` stays above the entries.
    The section (or the whole file, with a title) is created when missing.
    """
    entry = entry if entry.endswith("\n") else entry + "\n"
    if not existing.strip():
        return f"{SUMMARY_TITLE}\n\n## Runs\n\n{entry}"
    lines = existing.splitlines(keepends=True)
    plain = _outside_fences(lines)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    heading = next(
        (
            i
            for i, line in enumerate(lines)
            if plain[i] and _RUNS_HEADING.match(line.rstrip("\r\n"))
        ),
        None,
    )
    if heading is None:
        sep = "" if existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
        return f"{existing}{sep}## Runs\n\n{entry}"
    pos = None
    for i in range(heading + 1, len(lines)):
        if not plain[i]:
            continue
        if _ENTRY_HEADING.match(lines[i]) or _RUN_MARK.match(lines[i].rstrip("\r\n")):
            return existing[: offsets[i]] + entry + "\n" + existing[offsets[i] :]
        if _SECTION_END.match(lines[i]):
            pos = i
            break
    # no entry yet: at the end of the section, after any intro text
    cut = offsets[pos] if pos is not None else len(existing)
    before, after = existing[:cut], existing[cut:]
    lead = "" if before.endswith("\n\n") else ("\n" if before.endswith("\n") else "\n\n")
    return before + lead + entry + ("\n" if after else "") + after


def add_summary_entry(writer: EvidenceWriter, facts: RunFacts) -> str:
    """This run's entry at the top of summary.md's ``## Runs``; returns the entry as written.

    The entry takes the form the file's entries already have (the app's hand-written
    ``#### <time> (<label>)`` form, else the suite's), decided under the lock. Only the
    entry is redacted: every byte already in the file stays as it was.
    """
    written: list[str] = []

    def add(old: str) -> str:
        entry = writer.redactor.redact(render_summary_entry(facts, summary_entry_style(old)))
        written.append(entry)
        return insert_run_entry(old, entry)

    writer.update_locked(SUMMARY_RELPATH, add, redact_all=False)
    return written[-1]


_RUN_MARK = re.compile(r"^<!-- cron-dryrun:run (?P<key>\S+) -->$", re.M)


def correct_summary_entry(writer: EvidenceWriter, facts: RunFacts) -> str | None:
    """Replace this run's entry (found by its run markers) with one rendered from ``facts``;
    returns the new entry, or None when the file holds no entry of this run.

    For a run whose verdict changed after its entry was written (evidence that could not be
    written makes it NO-GO): the summary must not say GO where gate.json says NO-GO. Every
    other byte of the file stays as it was.
    """
    if not facts.run_id:
        return None
    written: list[str] = []

    def correct(old: str) -> str:
        block = run_block(old, facts.run_id or "")
        if block is None:
            return old
        entry = writer.redactor.redact(render_summary_entry(facts, summary_entry_style(old)))
        entry = entry if entry.endswith("\n") else entry + "\n"
        written.append(entry)
        return old.replace(block, entry, 1)

    writer.update_locked(SUMMARY_RELPATH, correct, redact_all=False)
    return written[-1] if written else None
