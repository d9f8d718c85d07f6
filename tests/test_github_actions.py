"""In GitHub Actions: the verdict table in the step summary, one annotation per failed check."""

from __future__ import annotations

from pathlib import Path

from suite_runs import RunSuite

from cron_dryrun.evidence import Redactor
from cron_dryrun.rules.gate import CheckOutcome, decide
from cron_dryrun.session.github_actions import (
    error_annotations,
    escape_data,
    escape_property,
    step_summary,
)

SECRET = "s3cr3t-value-0123456789"


def _verdict() -> object:
    return decide(
        [
            CheckOutcome("a::t1", "prerequisites", "passed"),
            CheckOutcome("a::t2", "parity", "failed", f"drift 3 % | token {SECRET}\nsecond line"),
        ],
        required_steps=("prerequisites", "parity", "telemetry"),
        extra_reasons=["promotion gate: the 48-hour dry run is not complete (run 1 of 2)"],
    )


def test_one_annotation_per_failed_check_escaped_and_redacted() -> None:
    lines = error_annotations(_verdict(), Redactor([SECRET]).redact)  # type: ignore[arg-type]
    assert lines == [
        "::error title=parity::failed: drift 3 %25 | token [REDACTED]%0Asecond line",
        "::error title=telemetry::not-run: not run: no test of this step was selected or collected",
        "::error title=promotion gate::promotion gate: the 48-hour dry run is not complete "
        "(run 1 of 2)",
    ]
    assert escape_data("50% a\r\nb") == "50%25 a%0D%0Ab"
    assert escape_property("a:b,c") == "a%3Ab%2Cc"


def test_step_summary_is_a_markdown_table_redacted() -> None:
    text = step_summary(
        _verdict(),  # type: ignore[arg-type]
        target="https://staging.example/api/cron/daily-usage",
        method="GET",
        run_at="2025-10-08T02:00:04Z",
        dry_run="run 1 of 2; next run due between ...",
        artefacts={"gate": "gate.json"},
        redact=Redactor([SECRET]).redact,
    )
    assert SECRET not in text
    lines = text.splitlines()
    assert lines[0] == "## 🔴 cron-dryrun gate: NO-GO"
    assert "| check | status | reason |" in lines
    assert "| prerequisites | ✅ passed | 1 test(s) passed |" in lines
    assert "| parity | ❌ failed | drift 3 % \\| token [REDACTED] second line |" in lines
    assert (
        "| telemetry | ⚪ not-run | not run: no test of this step was selected or collected |"
        in lines
    )
    assert "- **promotion gate: the 48-hour dry run is not complete (run 1 of 2)**" in lines
    assert "- gate: `gate.json`" in lines
    assert text.endswith("\n\n")


def test_a_run_in_github_actions_appends_the_summary_and_annotates_failed_checks(
    run_suite: RunSuite,
    tmp_path: Path,
) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("## an earlier step's summary\n")
    env = dict(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary))
    result = run_suite(
        "--fault=token-drift", f"--audit-dir={tmp_path / 'audit'}", env=env, shared_postgres=True
    )
    assert result.returncode == 1, result.stdout[-3000:]
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 1 and errors[0].startswith("::error title=parity::failed: "), errors
    text = summary.read_text()
    assert text.startswith("## an earlier step's summary\n## 🔴 cron-dryrun gate: NO-GO\n")
    assert "| parity | ❌ failed |" in text and "| telemetry | ✅ passed |" in text

    quiet = tmp_path / "untouched.md"
    quiet.write_text("")
    result = run_suite(
        f"--audit-dir={tmp_path / 'audit2'}",
        env={"GITHUB_STEP_SUMMARY": str(quiet)},
        shared_postgres=True,
    )
    assert result.returncode == 0 and "::error" not in result.stdout
    assert quiet.read_text() == ""
