"""The fault matrix: the acceptance suite against each stand-in fault, exact failures asserted.

A check that stays green under its fault, or turns red without one, is a bug in
the suite. Every fault runs `pytest acceptance/ -m dryrun --fault X` in its own
process, against one shared PostgreSQL (a fresh database per run), two at a time.

Deviation from the issue's table, because contract.md section 3 says so: with the
flag off the app inserts rows with an unaligned, non-midnight window_start, so a
rerun at a later time inserts new rows instead of updating: `flag-off` also fails
the idempotent rerun check.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from suite_runs import ROOT, clean_env, gate_of, run_acceptance, run_in_workers

from cron_dryrun.rules.gate import REQUIRED_STEPS
from cron_dryrun.target.pg_server import RunningPostgres

ALL_BUT_PREREQUISITES = frozenset(REQUIRED_STEPS) - {"prerequisites"}

# fault -> the runbook steps that must fail (empty: GO)
MATRIX: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "auth-open": frozenset({"auth_smoke"}),
    "auth-no-header": frozenset({"auth_smoke"}),
    "auth-401-writes": frozenset({"auth_smoke"}),
    "no-post": ALL_BUT_PREREQUISITES,
    "flag-off": frozenset(
        {"flag_state", "telemetry", "window_scoping", "parity", "idempotent_rerun"}
    ),
    "flag-missing": frozenset({"flag_state"}),
    "flag-string": frozenset({"flag_state"}),
    "window-shift": frozenset({"window_scoping", "parity"}),
    "window-wide": frozenset({"window_scoping"}),
    "stale-update": frozenset({"window_scoping"}),
    "simulated": frozenset({"no_simulated_keys", "telemetry", "parity"}),
    "simulated-count": frozenset({"no_simulated_keys"}),
    "token-drift": frozenset({"parity"}),
    "small-drift": frozenset(),
    "drop-window": frozenset({"telemetry", "parity"}),
    "duplicate-rerun": frozenset({"idempotent_rerun"}),
    "provider-error": frozenset({"telemetry", "parity"}),
    "all-keys-fail": frozenset({"telemetry", "parity", "idempotent_rerun"}),
    "pricing-fallback": frozenset(),
    "renamed-model": frozenset({"parity"}),
    "null-breakdown": frozenset(),
    "html-500": ALL_BUT_PREREQUISITES,
    "slow": ALL_BUT_PREREQUISITES,
    "throttle": frozenset(),
    # the telemetry's counters (issue 27): each lie fails the telemetry check only; a
    # negative count also breaks the response schema, which the auth smoke check validates
    "manual-fallback": frozenset(),
    "stored-updated-swapped": frozenset({"telemetry"}),
    "warning-count-off": frozenset({"telemetry"}),
    "fallback-keys-zero": frozenset({"telemetry"}),
    "fallback-windows-off": frozenset({"telemetry"}),
    "processed-users-off": frozenset({"telemetry"}),
    "write-modes-off": frozenset({"telemetry"}),
    "negative-count": frozenset({"auth_smoke", "telemetry"}),
}
# what the telemetry check says about each counter lie: the counter, reported, observed.
# Row counts follow the stand-in's usage of the day, so they are matched, then related.
TELEMETRY_LIES = {
    "stored-updated-swapped": r"main exchange: telemetry\.storedEvents is 0, but the exchange "
    r"inserted [1-9]\d* new usage_events row\(s\) \(ids \d+, ",
    "warning-count-off": r"warningCount is 1, but the issues in telemetry\.issuesByCode add up "
    r"to 0: ",
    "fallback-keys-zero": r"telemetry\.manualFallbackKeys is 0, but manualFallbackInserts \+ "
    r"manualFallbackUpdates is (\d+) \+ 0 = \1: ",
    "fallback-windows-off": r"main exchange: telemetry\.manualFallbackWindows is (?P<said>\d+), "
    r"but the exchange wrote rows for (?P<seen>\d+) \(key, window\) pair\(s\)",
    "processed-users-off": r"telemetry\.processedUsers is 4, but processed is 3: ",
    "write-modes-off": r"telemetry\.storedEvents is (?P<said>\d+), but constraintInserts \+ "
    r"manualFallbackInserts is (?P<seen>\d+) \+ 0 = (?P=seen): ",
    "negative-count": r"telemetry\.constraintUpdates is -1, expected a whole number >= 0",
}
# said - seen, where the lie is an offset
LIE_OFFSETS = {"fallback-windows-off": 2, "write-modes-off": -1}
# the parity check's database reader per run (CRON_DRYRUN_DB_READER, no fallback): ADBC,
# except for these parity faults, which run on the COPY csv path
CSV_READER_FAULTS = frozenset({"token-drift", "window-shift", "small-drift"})
# faults where the main exchange is never made: the dependent checks must say so
NO_EXCHANGE = {"no-post", "html-500", "slow"}
# Known values the redaction test looks for in every file the runs leave.
KNOWN_SECRET = "matrix-Secret-7f3a9c1e5b"
DB_PASSWORD = "matrix-Pw-4d2e8a6c0f"
MATRIX_ROLE = "matrix_operator"
SLOW_TIMEOUT_S = "2"


@dataclass(frozen=True)
class MatrixRun:
    fault: str
    returncode: int
    output: str
    audit_dir: Path
    gate: dict[str, Any] | None


def _clean_env() -> dict[str, str]:
    return clean_env(CRON_SECRET=KNOWN_SECRET)


def _password_dsn(server_dsn: str) -> str:
    """The shared server's DSN as a role with a password, so the redaction test has one to find."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(server_dsn)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(
        (parts.scheme, f"{MATRIX_ROLE}:{DB_PASSWORD}@{host}", parts.path, parts.query, "")
    )


def _job(fault: str, database_url: str, root: Path) -> tuple[list[str], dict[str, str]]:
    """One run of the suite under ``fault``: its arguments and environment."""
    args = ["--fault", fault, "--db-backend", "url", "--database-url", database_url]
    args += [f"--audit-dir={root / fault}", "--run-label", f"matrix {fault}"]
    if fault == "slow":
        args += ["--cron-timeout", SLOW_TIMEOUT_S]
    reader = "copy-csv" if fault in CSV_READER_FAULTS else "adbc"
    return args, {**_clean_env(), "CRON_DRYRUN_DB_READER": reader}


@pytest.fixture(scope="module")
def matrix(
    pg_server: RunningPostgres, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, MatrixRun]:
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {MATRIX_ROLE}")
        conn.execute(f"CREATE ROLE {MATRIX_ROLE} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'")
    database_url = _password_dsn(pg_server.dsn)
    root = tmp_path_factory.mktemp("matrix")
    started = time.monotonic()
    # each fault's run in a process apart from the tests', two workers (one per core)
    results = run_in_workers([_job(f, database_url, root) for f in MATRIX], root / "workers")
    print(f"\nfault matrix: {len(results)} runs in {time.monotonic() - started:.1f}s wall")
    runs = {}
    for fault, result in zip(MATRIX, results, strict=True):
        output = result.stdout + result.stderr
        runs[fault] = MatrixRun(
            fault, result.returncode, output, root / fault, gate_of(root / fault)
        )
    return runs


def failed_steps(gate: dict[str, Any]) -> set[str]:
    return {step["name"] for step in gate["steps"] if step["status"] != "passed"}


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(MATRIX))
def test_fault_fails_exactly_its_checks(fault: str, matrix: dict[str, MatrixRun]) -> None:
    run = matrix[fault]
    assert run.gate is not None, f"no gate.json after --fault {fault}:\n{run.output[-3000:]}"
    expected = MATRIX[fault]
    assert failed_steps(run.gate) == set(expected), run.output[-3000:]
    assert run.gate["verdict"] == ("GO" if not expected else "NO-GO")
    assert run.returncode == (0 if not expected else 1), run.output[-3000:]
    assert f"verdict: {run.gate['verdict']}" in run.output


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(TELEMETRY_LIES))
def test_each_counter_lie_is_named_with_what_was_reported_and_seen(
    fault: str, matrix: dict[str, MatrixRun]
) -> None:
    gate = matrix[fault].gate
    assert gate is not None
    reason = {s["name"]: s["reason"] for s in gate["steps"]}["telemetry"]
    match = re.match(TELEMETRY_LIES[fault], reason)
    assert match, reason
    if fault in LIE_OFFSETS:
        assert int(match["said"]) - int(match["seen"]) == LIE_OFFSETS[fault], reason


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(MATRIX))
def test_every_fault_leaves_its_evidence(fault: str, matrix: dict[str, MatrixRun]) -> None:
    run = matrix[fault]
    dry = run.audit_dir / "cron-dry-run"
    summary = (dry / "summary.md").read_text()
    assert summary.count("#### ") == 1 and f"matrix {fault}" in summary
    smoke = list(dry.glob("smoke-*.log"))
    assert len(smoke) == 1 and "### main exchange" in smoke[0].read_text()
    schema = json.loads((ROOT / "schemas" / "gate.schema.json").read_text())
    jsonschema.validate(run.gate, schema)


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(NO_EXCHANGE))
def test_checks_needing_the_exchange_say_it_was_not_made(
    fault: str, matrix: dict[str, MatrixRun]
) -> None:
    gate = matrix[fault].gate
    assert gate is not None
    reasons = {s["name"]: s["reason"] for s in gate["steps"]}
    for step in (
        "flag_state",
        "telemetry",
        "window_scoping",
        "no_simulated_keys",
        "idempotent_rerun",
        "parity",
    ):
        assert reasons[step].startswith("the cron exchange was not made"), (step, reasons[step])
    if fault == "slow":
        assert "timed out after 2s" in reasons["auth_smoke"]
    if fault == "no-post":
        assert (
            "refused the method POST" in reasons["auth_smoke"]
            and "--cron-method GET" in reasons["auth_smoke"]
        )


@pytest.mark.slow
def test_flag_off_leads_with_the_flag_and_its_fix_everywhere(matrix: dict[str, MatrixRun]) -> None:
    run = matrix["flag-off"]
    # a local run: the stand-in's flag, not staging's
    fix = "set ENABLE_DAILY_USAGE_WINDOWS=true in the app's environment and redeploy"
    out = run.output
    cause_at = out.index("root cause: ENABLE_DAILY_USAGE_WINDOWS is off on the local stack")
    assert "in staging" not in out
    assert out.index(f"fix: {fix}") > cause_at
    assert cause_at < out.index("  !! flag_state")  # before the table
    assert run.gate is not None
    assert run.gate["root_cause"]["kind"] == "flag-off"
    assert run.gate["root_cause"]["consequences"] == [
        "flag_state", "telemetry", "window_scoping", "idempotent_rerun", "parity"
    ]  # fmt: skip
    assert run.gate["reasons"][0].startswith("root cause: ENABLE_DAILY_USAGE_WINDOWS is off")
    assert fix in run.gate["reasons"][0]
    summary = (run.audit_dir / "cron-dry-run" / "summary.md").read_text()
    assert "**Verdict:** **NO-GO**: root cause: ENABLE_DAILY_USAGE_WINDOWS is off" in summary
    assert fix in summary


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(NO_EXCHANGE))
def test_an_exchange_not_made_is_the_root_cause_said_once(
    fault: str, matrix: dict[str, MatrixRun]
) -> None:
    run = matrix[fault]
    assert "During handling of the above exception" not in run.output
    assert run.gate is not None and run.gate["root_cause"]["kind"] == "exchange-missing"
    assert run.output.index("root cause: the cron exchange was not made") < run.output.index(
        "  !! auth_smoke"
    )
    if fault == "no-post":
        assert run.gate["root_cause"]["fix"].startswith("rerun with --cron-method GET")


@pytest.mark.slow
@pytest.mark.parametrize("fault", sorted(set(MATRIX) - NO_EXCHANGE))
def test_parity_read_the_database_with_the_reader_asked_for(
    fault: str, matrix: dict[str, MatrixRun]
) -> None:
    (report,) = (matrix[fault].audit_dir / "telemetry-audit").glob("*-cron-diff.json")
    data = json.loads(report.read_text())
    expected = "copy-csv" if fault in CSV_READER_FAULTS else "adbc"
    assert (data["dbReader"], data["dbReaderFallback"]) == (expected, None)


@pytest.mark.slow
def test_every_key_failing_is_the_root_cause_and_the_rerun_says_so(
    matrix: dict[str, MatrixRun],
) -> None:
    gate = matrix["all-keys-fail"].gate
    assert gate is not None and gate["root_cause"]["kind"] == "all-keys-failed"
    assert gate["root_cause"]["cause"].startswith(
        "every key failed at the provider (failedKeys 4 of 4"
    )
    reason = {s["name"]: s["reason"] for s in gate["steps"]}["idempotent_rerun"]
    assert reason.startswith(
        "the rerun ingested nothing (failedKeys 4 of 4), so idempotence cannot be shown"
    )


@pytest.mark.slow
def test_a_renamed_model_is_named_once_by_parity(matrix: dict[str, MatrixRun]) -> None:
    gate = matrix["renamed-model"].gate
    assert gate is not None
    reason = {s["name"]: s["reason"] for s in gate["steps"]}["parity"]
    assert reason.startswith("parity check fail: model renamed by ingestion: gpt-4.1")
    assert "missing in the DB" not in reason  # every pair explained


@pytest.mark.slow
def test_unrecorded_breakdown_is_a_warning_in_terminal_notes_and_report(
    matrix: dict[str, MatrixRun],
) -> None:
    run = matrix["null-breakdown"]
    assert run.gate is not None and run.gate["verdict"] == "GO"
    words = (
        "not recorded by ingestion: input_uncached_tokens, input_text_tokens, output_text_tokens"
    )
    assert f"warning: parity: {words}" in run.output
    (notes,) = (run.audit_dir / "cron-dry-run").glob("notes-*.md")
    assert f"parity warning: {words}" in notes.read_text()
    assert f"warning: parity: {words}" in (run.audit_dir / "report.html").read_text()
    (diff,) = (run.audit_dir / "telemetry-audit").glob("*-cron-diff.json")
    assert json.loads(diff.read_text())["notRecordedByIngestion"]


@pytest.mark.slow
def test_throttling_header_is_in_the_evidence(matrix: dict[str, MatrixRun]) -> None:
    run = matrix["throttle"]
    smoke = next((run.audit_dir / "cron-dry-run").glob("smoke-*.log")).read_text().lower()
    assert "< http/1.1 429" in smoke and "retry-after: 1" in smoke
    assert "retry-after" in (run.audit_dir / "cron-dry-run" / "summary.md").read_text().lower()


@pytest.mark.slow
def test_pricing_fallback_is_a_warning_not_a_failure(matrix: dict[str, MatrixRun]) -> None:
    summary = (matrix["pricing-fallback"].audit_dir / "cron-dry-run" / "summary.md").read_text()
    assert "PRICING_FALLBACK" in summary and "issues recorded as warnings" in summary


@pytest.mark.slow
def test_no_secret_reaches_any_file_or_output(matrix: dict[str, MatrixRun]) -> None:
    hits = []
    for run in matrix.values():
        if KNOWN_SECRET in run.output or DB_PASSWORD in run.output:
            hits.append(f"{run.fault}: terminal output")
        for path in run.audit_dir.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                if KNOWN_SECRET.encode() in data or DB_PASSWORD.encode() in data:
                    hits.append(str(path))
    assert hits == []
    # and the scan can fail: the redacted marker is there where the secret would have been
    smoke = next((matrix["none"].audit_dir / "cron-dry-run").glob("smoke-*.log")).read_text()
    assert "Authorization: Bearer [REDACTED]" in smoke


def _report_blob(report: Path) -> dict[str, Any]:
    import html
    import re

    match = re.search(r'data-jsonblob="([^"]*)"', report.read_text())
    assert match, "pytest-html's data blob is missing"
    return json.loads(html.unescape(match.group(1)))


@pytest.mark.slow
def test_a_go_run_leaves_every_artefact_with_its_content(
    matrix: dict[str, MatrixRun], tmp_path: Path
) -> None:
    import shutil

    run = matrix["none"]
    audit = run.audit_dir
    dry = audit / "cron-dry-run"
    summary = (dry / "summary.md").read_text()
    assert "**Windows processed:** 8 (expected 8)" in summary
    assert "**Verdict:** **GO**" in summary and '"enableDailyUsageWindows": true' in summary
    smoke = next(dry.glob("smoke-*.log"))
    assert f"[smoke log]({smoke.name})" in summary
    smoke_text = smoke.read_text()
    for label in (
        "### main exchange",
        "### auth negative: no Authorization header",
        "### idempotent rerun",
    ):
        assert label in smoke_text
    assert "< HTTP/1.1 200 OK" in smoke_text and "< HTTP/1.1 401 Unauthorized" in smoke_text

    notes = next(dry.glob("notes-*.md")).read_text()
    assert "Windows processed: 8 (expected 8)" in notes and "## Operator comments" in notes

    ledger_lines = (dry / "ledger.jsonl").read_text().splitlines()
    ledger_schema = json.loads((ROOT / "schemas" / "ledger-entry.schema.json").read_text())
    assert len(ledger_lines) == 1
    entry = json.loads(ledger_lines[0])
    jsonschema.validate(entry, ledger_schema)
    assert entry["verdict"] == "GO" and entry["telemetry"]["windowsProcessed"] == 8

    diff = next((audit / "telemetry-audit").glob("*-cron-diff.json"))
    report_doc = json.loads(diff.read_text())
    jsonschema.validate(
        report_doc, json.loads((ROOT / "schemas" / "diff-report.schema.json").read_text())
    )
    assert f"telemetry-audit/{diff.name}" in summary

    blob = _report_blob(audit / "report.html")
    assert len(blob["tests"]) >= 20
    html_text = (audit / "report.html").read_text()
    assert "Gate verdict: GO" in html_text and "cron-dryrun gate: local stack" in html_text
    extras = [x for test in blob["tests"].values() for r in test for x in r.get("extras", [])]
    main = next(x for x in extras if "<summary>main exchange (curl -i)</summary>" in x["content"])
    assert main["format_type"] == "html"  # inline in the row's details, not a data: link
    assert "### main exchange" in main["content"]
    assert "Authorization: Bearer [REDACTED]" in main["content"]

    # the manifests hold, and verify-evidence names a changed file
    copy = tmp_path / "audit"
    shutil.copytree(audit, copy)
    ok = subprocess.run(
        [sys.executable, "-m", "cron_dryrun.cli", "verify-evidence", f"--audit-dir={copy}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    tampered = copy / "cron-dry-run" / smoke.name
    tampered.write_text(tampered.read_text() + "edited\n")
    bad = subprocess.run(
        [sys.executable, "-m", "cron_dryrun.cli", "verify-evidence", f"--audit-dir={copy}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and f"cron-dry-run/{smoke.name}" in bad.stdout + bad.stderr


def _render(browser: str, report: Path, png: Path, profile: Path) -> str:
    """Headless Chromium: the report's DOM after its script ran, and a PNG screenshot."""
    common = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}",
        "--virtual-time-budget=5000", "--window-size=1280,1600",
    ]  # fmt: skip
    shot = subprocess.run(
        [*common, f"--screenshot={png}", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert png.is_file() and png.stat().st_size > 10_000, shot.stderr[-2000:]
    dom = subprocess.run(
        [*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    )
    return dom.stdout


def _artefact_dir(tmp_path: Path) -> Path:
    """Where the screenshots are kept for a reviewer: $CRON_DRYRUN_ARTEFACTS, else tmp."""
    import os

    folder = Path(os.environ.get("CRON_DRYRUN_ARTEFACTS") or tmp_path / "artefacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _banner_first(dom: str) -> None:
    body = dom.index("<body>")
    banner = dom.index('id="gate-banner"')
    assert banner > body
    for later in ('id="title"', 'id="environment"', 'id="results-table"'):
        assert dom.index(later) > banner, later
    assert 'href="data:' not in dom  # evidence is inline: no data: link (a blank tab in Chromium)


@pytest.fixture(scope="module")
def chromium() -> str:
    import shutil

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    return browser


@pytest.mark.slow
def test_a_go_report_renders_banner_first_with_both_pictures_in_chromium(
    matrix: dict[str, MatrixRun], tmp_path: Path, chromium: str
) -> None:
    report = matrix["none"].audit_dir / "report.html"
    dom = _render(chromium, report, _artefact_dir(tmp_path) / "report-go.png", tmp_path / "p")
    _banner_first(dom)
    assert 'data-verdict="GO"' in dom and "Gate verdict: GO" in dom
    assert dom.count('class="step-passed"') == len(REQUIRED_STEPS)
    assert 'id="ledger-timeline"' in dom and 'class="run green"' in dom and 'class="now"' in dom
    assert 'id="parity-days"' in dom and 'class="bar db"' in dom and 'class="bar export"' in dom
    assert 'class="day offending"' not in dom
    assert re.search(r'id="exchanges">Exchanges: main exchange 200 OK in [0-9.]+ s', dom)
    # evidence inline in the rows' details (the table is drawn by the report's script)
    assert 'class="cron-dryrun-evidence"' in dom and "### main exchange" in dom
    assert "Authorization: Bearer [REDACTED]" in dom
    assert "parity offenders" in dom


@pytest.mark.slow
def test_a_flag_off_report_leads_with_the_root_cause_in_chromium(
    matrix: dict[str, MatrixRun], tmp_path: Path, chromium: str
) -> None:
    report = matrix["flag-off"].audit_dir / "report.html"
    dom = _render(chromium, report, _artefact_dir(tmp_path) / "report-flag-off.png", tmp_path / "p")
    _banner_first(dom)
    assert "Gate verdict: NO-GO" in dom
    cause = dom.index('id="root-cause"')
    assert cause < dom.index('id="gate-steps"')
    assert "set ENABLE_DAILY_USAGE_WINDOWS=true in the staging environment and redeploy" in dom
    assert dom.count('class="step-failed"') == 5
    assert dom.count("(consequence of the root cause)") == 5
    assert 'class="run red"' in dom and 'class="day offending"' in dom
    assert 'class="offending-day"' in dom


@pytest.mark.slow
def test_a_config_error_report_shows_the_error_in_chromium(tmp_path: Path, chromium: str) -> None:
    audit = tmp_path / "audit"
    env = clean_env(CRON_URL="https://staging.example.invalid/api/cron/daily-usage")
    result = run_acceptance(f"--audit-dir={audit}", env=env)
    assert result.returncode == 4, result.stdout + result.stderr
    report = audit / "report.html"
    dom = _render(chromium, report, _artefact_dir(tmp_path) / "report-config-error.png",
                  tmp_path / "p")  # fmt: skip
    _banner_first(dom)
    error = dom.index('id="config-error"')
    assert error < dom.index('id="gate-steps"')
    assert "CRON_SECRET is not set" in dom[error:] and "DATABASE_URL is not set" in dom[error:]
    assert "no test of this step was selected" not in dom
    assert "the configuration error above stopped the run" in dom
