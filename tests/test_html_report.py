"""The HTML report's banner and pictures: pure strings, checked without a browser.

tests/test_fault_matrix.py renders real reports in headless Chromium.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from suite_runs import RunSuite

from cron_dryrun.evidence import html_report as hr

NOW = datetime(2025, 10, 9, 2, 0, tzinfo=UTC)


def view(**changes: object) -> hr.ReportView:
    base: dict[str, object] = {
        "verdict": "NO-GO",
        "target": "https://staging.cogni-track.app/api/cron/daily-usage",
        "method": "GET",
        "generated": "2025-10-09T02:00:00Z",
        "steps": [
            hr.StepRow("auth_smoke", "passed", "17 test(s) passed"),
            hr.StepRow("flag_state", "failed", "flags.enableDailyUsageWindows is false <b>"),
        ],
        "now": NOW,
    }
    base.update(changes)
    return hr.ReportView(**base)  # type: ignore[arg-type]


def test_banner_leads_with_verdict_then_root_cause_then_steps() -> None:
    cause = {
        "kind": "flag-off",
        "cause": "the flag is off",
        "fix": "set it",
        "consequences": ["flag_state"],
    }
    html = hr.banner_html(view(root_cause=cause))
    assert (
        html.index("Gate verdict: NO-GO")
        < html.index('id="root-cause"')
        < html.index('id="gate-steps"')
    )
    assert "<strong>Fix:</strong> set it" in html
    assert '<tr class="step-failed" style="background:#ffebe9">' in html
    assert 'is false &lt;b&gt; <span class="consequence">' in html  # escaped, marked
    assert 'href="data:' not in html


def test_config_error_is_shown_instead_of_not_run_rows() -> None:
    steps = [hr.StepRow("parity", "not-run", "not run: no test of this step was selected")]
    html = hr.banner_html(view(steps=steps, config_error="CRON_SECRET is not set"))
    assert "<pre>CRON_SECRET is not set</pre>" in html
    assert "no test of this step was selected" not in html


def test_every_exchanges_status_and_duration_is_shown_below_the_steps() -> None:
    line = "main exchange 200 OK in 0.20 s; 14 auth negatives 401 in 0.00-0.01 s each <x>"
    html = hr.banner_html(view(exchanges=line))
    assert html.index('id="gate-steps"') < html.index('id="exchanges"')
    assert "Exchanges: main exchange 200 OK in 0.20 s; 14 auth negatives" in html
    assert "each &lt;x&gt;</p>" in html  # escaped
    assert 'id="exchanges"' not in hr.banner_html(view())  # nothing was exchanged: no line


def test_ledger_timeline_marks_runs_due_windows_gaps_and_now() -> None:
    points = [
        hr.LedgerPoint(NOW - timedelta(hours=70), True),
        hr.LedgerPoint(NOW - timedelta(hours=30), True),  # 40 h later: a gap
        hr.LedgerPoint(NOW - timedelta(hours=1), False),
    ]
    svg = hr.ledger_timeline_svg(points, NOW)
    assert svg.count('class="run green"') == 2 and svg.count('class="run red"') == 1
    assert svg.count('class="due-window"') == 2
    assert svg.count('class="gap"') == 1 and "gap of 40.0 h" in svg
    assert 'class="now"' in svg


def test_parity_bars_mark_offending_days() -> None:
    days = [
        hr.ParityDay("2025-10-07", True, 1000, 1000, False),
        hr.ParityDay("2025-10-08", True, 1000, 0, True),
        hr.ParityDay("2025-10-09", False, 10, 5, False, "still open"),
    ]
    svg = hr.parity_bars_svg(days)
    assert svg.count('class="bar db"') == svg.count('class="bar export"') == 3
    assert svg.count('class="offending-day"') == 1
    assert "2025-10-08 ✗" in svg and "2025-10-09 (not judged)" in svg


def test_banner_goes_first_in_the_body_and_nothing_else_moves() -> None:
    report = '<html><head></head><body><h1 id="title">t</h1></body></html>'
    out = hr.insert_banner(report, "<section>B</section>")
    assert (
        out == '<html><head></head><body>\n<section>B</section><h1 id="title">t</h1></body></html>'
    )


def test_evidence_is_inline_text() -> None:
    block = hr.evidence_block("main exchange (curl -i)", "> POST /x\n< HTTP/1.1 200 OK & <ok>")
    assert block.startswith('<details class="cron-dryrun-evidence" open>')
    assert "&lt; HTTP/1.1 200 OK &amp; &lt;ok&gt;" in block


def test_the_operators_own_html_report_shows_the_ledger_with_this_run(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    """With --html at the operator's own path the banner sits in pytest-html's summary; its
    48-hour timeline reads the ledger too (it always said "no run recorded yet")."""
    own = tmp_path / "own.html"
    audit = tmp_path / "audit"
    result = run_suite(f"--html={own}", f"--audit-dir={audit}", shared_postgres=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    html = own.read_text(encoding="utf-8")
    assert "Gate verdict: GO" in html
    assert html.count('<circle class="run green"') == 1, "this run's ledger line, drawn"
    assert "no run recorded yet" not in html
    assert (audit / "cron-dry-run" / "ledger.jsonl").read_text().count("\n") == 1


@pytest.mark.parametrize(
    "how",
    [
        pytest.param(("--collect-only",), id="collect-only"),
        pytest.param(("--openai-export", "/nonexistent/usage.csv"), id="refused-by-the-preflight"),
        pytest.param((), id="a-whole-run"),
    ],
)
def test_the_temp_folder_pytest_html_writes_into_is_removed(
    run_suite: RunSuite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: tuple[str, ...],
) -> None:
    # pytest-html writes the report to a temp folder before the redacted copy into audit/:
    # every kind of session leaves nothing of it behind (there were hundreds in /tmp)
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    result = run_suite(f"--audit-dir={tmp_path / 'audit'}", *how, shared_postgres=not how)
    assert not list(temp_root.glob("cron-dryrun-html-*"))
    # and no "Generated html report" line points at a temp file that is gone
    assert "cron-dryrun-html-" not in result.stdout + result.stderr
