"""The HTML report as an auditor reads it: the verdict banner first, then pictures. Pure.

Builds strings only (no I/O, no pytest): the banner (verdict, root cause and fix, the
coloured step table with full reasons, a configuration error when the run stopped before
triggering), the 48-hour ledger as an SVG timeline, the per-day DB-vs-export totals as an
SVG bar chart, and the inline evidence blocks that go into each row's details. Everything
is inline (styles and SVG), so the report stays one self-contained file with no ``data:``
links. ``session.finish.finish_html`` puts the banner at the top of pytest-html's report.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cron_dryrun.parity.rules import DiffResult

BANNER_ID = "gate-banner"
GREEN, RED, GREY, AMBER = "#1a7f37", "#cf222e", "#6e7781", "#9a6700"
STATUS_COLOURS = {
    "passed": ("#dafbe1", GREEN),
    "failed": ("#ffebe9", RED),
    "error": ("#ffebe9", RED),
    "not-run": ("#fff8c5", AMBER),
    "skipped": ("#fff8c5", AMBER),
    "xfailed": ("#fff8c5", AMBER),
    "xpassed": ("#fff8c5", AMBER),
}
MIN_GAP_H, MAX_GAP_H = 20, 28

STYLE = f"""
#{BANNER_ID} {{ font-family: Helvetica, Arial, sans-serif; font-size: 14px; color: #1f2328;
  border: 2px solid var(--verdict); border-radius: 6px; padding: 12px 16px; margin: 0 0 16px 0; }}
#{BANNER_ID} h2 {{ margin: 0 0 6px 0; font-size: 22px; color: var(--verdict); }}
#{BANNER_ID} .meta {{ color: #424a53; margin: 0 0 10px 0; }}
#{BANNER_ID} .cause, #{BANNER_ID} .config-error {{ background: #ffebe9; border-left: 4px solid {RED};
  padding: 8px 12px; margin: 8px 0; }}
#{BANNER_ID} .cause p, #{BANNER_ID} .config-error p {{ margin: 2px 0; }}
#{BANNER_ID} .config-error pre {{ white-space: pre-wrap; margin: 4px 0; font-size: 13px; }}
#{BANNER_ID} table#gate-steps {{ border-collapse: collapse; width: 100%; margin: 8px 0; }}
#{BANNER_ID} table#gate-steps th {{ text-align: left; background: #f6f8fa; padding: 6px 10px;
  border-bottom: 2px solid #d0d7de; }}
#{BANNER_ID} table#gate-steps td {{ padding: 6px 10px; border-bottom: 1px solid #d0d7de;
  vertical-align: top; color: #1f2328; white-space: normal; word-break: break-word; }}
#{BANNER_ID} table#gate-steps td.status {{ font-weight: bold; white-space: nowrap;
  word-break: normal; width: 1%; }}
#{BANNER_ID} table#gate-steps td.step {{ white-space: nowrap; word-break: normal; width: 1%;
  font-family: monospace; }}
#{BANNER_ID} .consequence {{ color: #57606a; font-style: italic; }}
#{BANNER_ID} figure {{ margin: 12px 0 0 0; }}
#{BANNER_ID} figcaption {{ font-weight: bold; margin-bottom: 4px; }}
.cron-dryrun-evidence summary {{ font-weight: bold; cursor: pointer; }}
.cron-dryrun-evidence pre {{ white-space: pre-wrap; word-break: break-word; background: #f6f8fa;
  padding: 8px; border: 1px solid #d0d7de; font-size: 12px; max-height: 40em; overflow: auto; }}
.cron-dryrun-evidence table {{ border-collapse: collapse; font-size: 12px; }}
.cron-dryrun-evidence th, .cron-dryrun-evidence td {{ border: 1px solid #d0d7de; padding: 3px 6px;
  text-align: left; }}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


@dataclass(frozen=True)
class StepRow:
    step: str
    status: str
    reason: str


@dataclass(frozen=True)
class LedgerPoint:
    time: datetime
    green: bool
    label: str = ""


@dataclass(frozen=True)
class ParityDay:
    day: str  # ISO date
    judged: bool
    export_tokens: int  # input + output tokens
    db_tokens: int
    offending: bool
    reason: str | None = None


@dataclass(frozen=True)
class ReportView:
    """What the banner shows; built from the session state by ``session.reporting``."""

    verdict: str  # "GO" or "NO-GO"
    target: str
    method: str
    generated: str
    steps: Sequence[StepRow]
    root_cause: Mapping[str, Any] | None = None  # RootCause.to_json()
    config_error: str | None = None
    dry_run: str | None = None
    ledger: Sequence[LedgerPoint] = ()
    now: datetime | None = None
    next_due: tuple[datetime, datetime] | None = None
    parity_days: Sequence[ParityDay] = ()
    warnings: Sequence[str] = field(default_factory=tuple)
    exchanges: str | None = None  # every exchange's status and duration (watch.exchange_durations)


# -- the banner ------------------------------------------------------------------------------------


def banner_html(view: ReportView) -> str:
    """The verdict banner: verdict, root cause, step table, both pictures; one <section>."""
    go = view.verdict == "GO"
    colour = GREEN if go else RED
    parts = [
        f"<style>{STYLE}</style>",
        f'<section id="{BANNER_ID}" style="--verdict:{colour}" data-verdict="{_e(view.verdict)}">',
        f'<h2 id="gate-verdict">Gate verdict: {_e(view.verdict)}</h2>',
        f'<p class="meta">Target: {_e(view.target)} &middot; method {_e(view.method)} '
        f"&middot; generated {_e(view.generated)}</p>",
    ]
    if view.config_error:
        parts.append(
            '<div class="config-error" id="config-error"><p><strong>Configuration error: '
            "nothing was triggered.</strong></p>"
            f"<pre>{_e(chr(10).join(view.config_error.split('; ')))}</pre>"
            "<p>Set what is named above and run again; no check could run.</p></div>"
        )
    cause = view.root_cause
    if cause:
        parts.append(
            '<div class="cause" id="root-cause">'
            f"<p><strong>Root cause:</strong> {_e(cause['cause'])}</p>"
            f"<p><strong>Fix:</strong> {_e(cause['fix'])}</p>"
            f"<p><strong>Consequences</strong> (these checks fail because of it): "
            f"{_e(', '.join(cause.get('consequences', [])))}</p></div>"
        )
    consequences = set(cause.get("consequences", [])) if cause else set()
    rows = []
    for s in view.steps:
        bg, fg = STATUS_COLOURS.get(s.status, ("#ffffff", GREY))
        reason = s.reason
        if view.config_error and s.status == "not-run":
            reason = "not run: the configuration error above stopped the run before any check"
        note = (
            ' <span class="consequence">(consequence of the root cause)</span>'
            if s.step in consequences
            else ""
        )
        rows.append(
            f'<tr class="step-{_e(s.status)}" style="background:{bg}">'
            f'<td class="step">{_e(s.step)}</td>'
            f'<td class="status" style="color:{fg}">{_e(s.status)}</td>'
            f"<td>{_e(reason)}{note}</td></tr>"
        )
    parts.append(
        '<table id="gate-steps"><thead><tr><th>check</th><th>status</th><th>reason</th></tr>'
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    for warning in view.warnings:
        parts.append(f'<p class="warning" style="color:{AMBER}">warning: {_e(warning)}</p>')
    if view.exchanges:
        parts.append(f'<p class="exchanges" id="exchanges">Exchanges: {_e(view.exchanges)}</p>')
    if view.dry_run:
        parts.append(f"<p>Dry run: {_e(view.dry_run)}</p>")
    if view.now is not None:
        parts.append(
            '<figure id="ledger-timeline"><figcaption>The 48-hour ledger</figcaption>'
            + ledger_timeline_svg(view.ledger, view.now, view.next_due)
            + "</figure>"
        )
    parts.append(
        '<figure id="parity-days"><figcaption>Per-day totals, DB vs export (input + output '
        "tokens)</figcaption>" + parity_bars_svg(view.parity_days) + "</figure>"
    )
    parts.append("</section>")
    return "".join(parts)


def insert_banner(report: str, banner: str) -> str:
    """The banner as the first thing in pytest-html's <body>; the rest byte for byte."""
    at = report.find("<body>")
    if at < 0:
        return banner + report
    at += len("<body>")
    return report[:at] + "\n" + banner + report[at:]


# -- the ledger timeline ---------------------------------------------------------------------------


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


def ledger_timeline_svg(
    points: Sequence[LedgerPoint],
    now: datetime,
    next_due: tuple[datetime, datetime] | None = None,
    width: int = 900,
) -> str:
    """Runs as points (green/red) over the last 48 h (or since the first run), the 20-28 h due
    window after each green run, gaps of more than 28 h between greens, and "now"."""
    start = min([now - timedelta(hours=48), *(p.time for p in points)])
    end = max([now + timedelta(hours=MAX_GAP_H + 2), *(p.time for p in points)])
    if next_due is not None:
        end = max(end, next_due[1] + timedelta(hours=2))
    span = max(_hours(end - start), 1.0)
    left, right, top, axis = 40, 20, 20, 70
    usable = width - left - right

    def x(t: datetime) -> float:
        return left + usable * _hours(t - start) / span

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="110" '
        f'viewBox="0 0 {width} 110" aria-label="ledger timeline">',
        f'<line x1="{left}" y1="{axis}" x2="{width - right}" y2="{axis}" stroke="{GREY}"/>',
    ]
    greens = sorted(p.time for p in points if p.green)
    for t in greens:  # the window in which the next run is due
        a, b = x(t + timedelta(hours=MIN_GAP_H)), x(t + timedelta(hours=MAX_GAP_H))
        out.append(
            f'<rect class="due-window" x="{a:.1f}" y="{top}" width="{b - a:.1f}" '
            f'height="{axis - top}" fill="{GREEN}" fill-opacity="0.12">'
            f"<title>next run due {_stamp(t + timedelta(hours=MIN_GAP_H))} .. "
            f"{_stamp(t + timedelta(hours=MAX_GAP_H))}</title></rect>"
        )
    for a_t, b_t in itertools.pairwise(greens):
        if b_t - a_t > timedelta(hours=MAX_GAP_H):
            out.append(
                f'<line class="gap" x1="{x(a_t):.1f}" y1="{axis + 8}" x2="{x(b_t):.1f}" '
                f'y2="{axis + 8}" stroke="{RED}" stroke-width="3" stroke-dasharray="6 3">'
                f"<title>gap of {_hours(b_t - a_t):.1f} h: the count restarts</title></line>"
            )
    for p in sorted(points, key=lambda p: p.time):
        colour = GREEN if p.green else RED
        verdict = "GO" if p.green else "NO-GO"
        out.append(
            f'<circle class="run {"green" if p.green else "red"}" cx="{x(p.time):.1f}" '
            f'cy="{axis}" r="7" fill="{colour}" stroke="#ffffff" stroke-width="2">'
            f"<title>{_e(_stamp(p.time))} {verdict} {_e(p.label)}</title></circle>"
        )
    nx = x(now)
    out.append(
        f'<line class="now" x1="{nx:.1f}" y1="{top - 8}" x2="{nx:.1f}" y2="{axis + 16}" '
        f'stroke="#0969da" stroke-width="2"/>'
        f'<text x="{nx + 4:.1f}" y="{top - 2}" font-size="12" fill="#0969da">now</text>'
    )
    for hours in range(0, int(span) + 1, 12):
        t = start + timedelta(hours=hours)
        out.append(
            f'<text x="{x(t):.1f}" y="{axis + 32}" font-size="11" fill="{GREY}" '
            f'text-anchor="middle">{_e(t.strftime("%m-%d %H:%M"))}</text>'
        )
    if not points:
        out.append(
            f'<text x="{left}" y="{top + 10}" font-size="12" fill="{GREY}">no run recorded yet</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%MZ")


# -- per-day totals --------------------------------------------------------------------------------


def parity_bars_svg(days: Sequence[ParityDay], width: int = 900) -> str:
    """DB and export side by side per day; offending days marked red, unjudged days grey."""
    if not days:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="30" '
            f'aria-label="per-day totals"><text x="10" y="20" font-size="12" fill="{GREY}">'
            "no parity data: the parity check did not run</text></svg>"
        )
    height, top, base = 190, 16, 150
    biggest = max(max(d.export_tokens, d.db_tokens) for d in days) or 1
    slot = min(160, (width - 60) / len(days))
    bar = slot * 0.3
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="per-day totals">',
        f'<line x1="40" y1="{base}" x2="{width - 10}" y2="{base}" stroke="{GREY}"/>',
    ]
    for i, d in enumerate(days):
        x0 = 50 + i * slot
        for j, (name, value, colour) in enumerate(
            (("export", d.export_tokens, "#8c959f"), ("db", d.db_tokens, "#0969da"))
        ):
            h = (base - top) * value / biggest
            out.append(
                f'<rect class="bar {name}" x="{x0 + j * (bar + 4):.1f}" y="{base - h:.1f}" '
                f'width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{_e(d.day)} {name}: {value}</title></rect>"
            )
        label_colour = RED if d.offending else (GREY if not d.judged else "#1f2328")
        mark = " ✗" if d.offending else ("" if d.judged else " (not judged)")
        out.append(
            f'<text class="day{" offending" if d.offending else ""}" x="{x0:.1f}" '
            f'y="{base + 16}" font-size="12" fill="{label_colour}">{_e(d.day)}{_e(mark)}</text>'
        )
        if d.offending:
            out.append(
                f'<rect class="offending-day" x="{x0 - 4:.1f}" y="{top - 6}" '
                f'width="{2 * bar + 12:.1f}" height="{base - top + 8}" fill="none" '
                f'stroke="{RED}" stroke-width="2" stroke-dasharray="4 2"/>'
            )
    out.append(
        f'<rect x="{width - 190}" y="4" width="10" height="10" fill="#8c959f"/>'
        f'<text x="{width - 176}" y="13" font-size="11">export</text>'
        f'<rect x="{width - 120}" y="4" width="10" height="10" fill="#0969da"/>'
        f'<text x="{width - 106}" y="13" font-size="11">db</text></svg>'
    )
    return "".join(out)


# -- evidence inside a row's details ---------------------------------------------------------------


def evidence_block(title: str, text: str) -> str:
    """One piece of evidence shown inline (``curl -i`` text, rows, telemetry): no link."""
    return (
        f'<details class="cron-dryrun-evidence" open><summary>{_e(title)}</summary>'
        f"<pre>{_e(text)}</pre></details>"
    )


def table_block(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table of evidence (parity offenders) shown inline."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<details class="cron-dryrun-evidence" open><summary>{_e(title)}</summary>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></details>"
    )


def offenders_html(result: DiffResult, limit: int = 20) -> str:
    """The parity offenders as a table for the report (worst first, as the message lists)."""
    from cron_dryrun.parity.rules import OFFENDER_KINDS

    rows: list[tuple[str, ...]] = []
    for kind in OFFENDER_KINDS:
        for offender in result.offenders[kind]:
            if len(rows) >= limit:
                break
            key = offender.key
            what = "; ".join(f.describe() for f in offender.findings) or {
                "missingInDb": "missing in DB",
                "missingInCsv": "missing in export",
            }.get(kind, kind)
            if offender.renamed:
                what += f" (model renamed: {offender.renamed})"
            rows.append(
                (key.day.isoformat(), key.project_id, key.api_key_id, key.user_id, key.model,
                 key.service_tier, "yes" if offender.judged else "no", what)
            )  # fmt: skip
    title = f"parity offenders ({result.counts['judgedOffenders']} judged; first {len(rows)})"
    if not rows:
        title = "parity offenders: none"
    return table_block(
        title, ("day", "project", "API key", "user", "model", "tier", "judged", "what"), rows
    )
