"""Interrupted runs: the evidence so far is on disk, the verdict says interrupted, no server is left.

Each test starts a real child process and signals it at a point it announces on
its own output (a test line, the stand-in's banner): no timing guesses.
"""

from __future__ import annotations

import http.server
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from neon_compute import SleepingCompute
from suite_runs import ROOT, acceptance_command, clean_env, guarded_env, netguard_attempts

from cron_dryrun.target.pg_guard import exited_within, postmaster_pid

FIRST_JUDGED = "test_auth_smoke.py::test_secret_is_accepted_with_a_json_body PASSED"
CHILD_TIMEOUT_S = 240
# an export the preflight accepts (its header): the run must get as far as the database
EXPORT_HEADER = (
    "start_time,end_time,start_time_iso,end_time_iso,project_id,num_model_requests,user_id,"
    "api_key_id,model,batch,service_tier,input_tokens,output_tokens\n"
)


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    killer = threading.Timer(CHILD_TIMEOUT_S, proc.kill)  # a hung child fails the test, bounded
    killer.daemon = True
    killer.start()
    return proc


def read_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """The child's lines up to the one holding ``marker`` (blocking reads, bounded by the timer)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            return seen
    raise AssertionError(f"{marker!r} never printed:\n{''.join(seen)[-3000:]}")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A short TMPDIR for the child: a PostgreSQL socket path must stay under 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="cdr-") as folder:
        yield Path(folder)


def pytest_command(audit: Path, *extra: str) -> list[str]:
    return acceptance_command("-v", f"--audit-dir={audit}", *extra)


@pytest.fixture
def remote_stack(pg_server: Any, tmp_path: Path) -> Iterator[dict[str, str]]:
    from cron_dryrun.standin import start_local_stack
    from cron_dryrun.target.database import create_app_database

    dsn = create_app_database(pg_server.dsn)
    with start_local_stack(
        dsn, secret="interrupt-secret-4242", export_dir=tmp_path / "exports"
    ) as stack:
        yield clean_env(
            CRON_URL=stack.cron_url,
            CRON_SECRET=stack.secret,
            DATABASE_URL=dsn,
            OPENAI_EXPORT=str(tmp_path / "exports"),
        )


def test_sigterm_in_remote_mode_writes_an_interrupted_no_go_that_never_counts(
    remote_stack: dict[str, str], tmp_path: Path
) -> None:
    audit = tmp_path / "audit"
    proc = start(pytest_command(audit), remote_stack)
    read_until(proc, FIRST_JUDGED)  # the main exchange was made and judged
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output[-3000:]
    assert "verdict: NO-GO" in output
    gate = json.loads((audit / "gate.json").read_text())
    assert gate["verdict"] == "NO-GO"
    assert any(r.startswith("interrupted: the run was stopped") for r in gate["reasons"])
    (line,) = [
        json.loads(x) for x in (audit / "cron-dry-run" / "ledger.jsonl").read_text().splitlines()
    ]
    assert line["completeness"] == "interrupted" and line["verdict"] == "NO-GO"
    (smoke,) = (audit / "cron-dry-run").glob("smoke-*.log")
    assert smoke.read_text().startswith("### main exchange\n")
    assert "interrupt-secret-4242" not in smoke.read_text()


def test_kill_9_of_a_local_run_leaves_the_smoke_log_and_no_postgres(
    tmp_path: Path, scratch: Path
) -> None:
    audit = tmp_path / "audit"
    audit.mkdir()
    # the previous run's GO: a killed run must not leave it for CI to read
    (audit / "gate.json").write_text(json.dumps({"verdict": "GO", "run_id": "earlier"}))
    proc = start(pytest_command(audit), clean_env(TMPDIR=str(scratch)))
    read_until(proc, FIRST_JUDGED)
    (data_dir,) = {p.parent for p in scratch.rglob("postmaster.pid")}
    pid = postmaster_pid(data_dir)
    assert pid is not None
    proc.kill()
    proc.wait(timeout=30)
    assert exited_within(pid, 60), f"postgres {pid} outlived its parent"
    (smoke,) = (audit / "cron-dry-run").glob("smoke-*.log")
    text = smoke.read_text()
    assert text.startswith("### main exchange\n") and "< HTTP/1.1 200 OK" in text
    assert not (audit / "cron-dry-run" / "ledger.jsonl").exists()
    gate = json.loads((audit / "gate.json").read_text())
    assert gate["verdict"] == "NO-GO" and gate["in_progress"] is True
    (reason,) = gate["reasons"]
    assert re.fullmatch(
        rf"run {gate['run_id']} in progress since \d{{4}}-\d\d-\d\dT[0-9:]+Z", reason
    )


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_the_standin_command_takes_its_postgres_with_it(scratch: Path, how: int) -> None:
    command = [sys.executable, "-m", "cron_dryrun.cli", "standin"]
    proc = start(command, clean_env(TMPDIR=str(scratch)))
    read_until(proc, "Serving; Ctrl-C stops and removes everything.")
    (data_dir,) = {p.parent for p in scratch.rglob("postmaster.pid")}
    pid = postmaster_pid(data_dir)
    assert pid is not None
    proc.send_signal(how)
    proc.communicate(timeout=60)
    assert exited_within(pid, 60), f"postgres {pid} outlived `cron-dryrun standin`"
    if how == signal.SIGTERM:
        assert proc.returncode == 0


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A cron endpoint that only counts what reaches it: the test asserts it stays at zero."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.seen.append(self.path)
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        return


def test_sigterm_before_the_first_request_triggers_and_records_nothing(
    tmp_path: Path, sleeping_neon: SleepingCompute
) -> None:
    """Stopped while the preflight waits for a database that does not answer: nothing was
    sent, so no ledger line, smoke log, summary or notes; gate.json says why."""
    seen: list[str] = []
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), type("Handler", (_Recorder,), {"seen": seen})
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    export = tmp_path / "export.csv"
    export.write_text(EXPORT_HEADER)
    audit = tmp_path / "audit"
    log = tmp_path / "netguard.jsonl"
    env = guarded_env(
        clean_env(
            CRON_URL=f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage",
            CRON_SECRET="interrupt-secret-4242-abcdef",
            DATABASE_URL=sleeping_neon.dsn("suite", "app", "pw"),
            DB_CONNECT_TIMEOUT="120",
            OPENAI_EXPORT=str(export),
        ),
        log,
    )
    try:
        proc = start(pytest_command(audit), env)
        read_until(proc, "waiting for the database to wake")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [], "a request reached the cron before the preflight had passed"
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output[-3000:]
    assert "nothing was triggered: no ledger line" in output and "verdict: NO-GO" in output
    assert not (audit / "cron-dry-run").exists()  # no ledger line, smoke log, summary or notes
    gate = json.loads((audit / "gate.json").read_text())
    assert gate["verdict"] == "NO-GO"
    assert gate["reasons"] == ["interrupted (SIGTERM or Ctrl-C) before anything was triggered"]
    assert netguard_attempts(log) == []


DUCKDB_INTERRUPTED = """
import os
import signal
import threading

import duckdb
import pytest


@pytest.mark.dryrun
@pytest.mark.parity
def test_a_long_parity_query():
    # one thread: DuckDB then notices the signal at once (with two it took 10-14 s); the
    # signal still arrives mid-query and comes back as its "Query interrupted" RuntimeError
    con = duckdb.connect(config={"threads": 1})
    con.execute("SET enable_progress_bar=true; SET enable_progress_bar_print=false")

    def signal_once_running():
        for _ in range(50_000_000):  # bounded: until the query reports progress
            if con.query_progress() > 0:
                os.kill(os.getpid(), signal.SIG{name})
                return

    threading.Thread(target=signal_once_running, daemon=True).start()
    con.execute("select count(*) from range(100000000000)").fetchall()
"""


@pytest.mark.parametrize("name", ["INT", "TERM"])
def test_a_signal_during_a_duckdb_query_interrupts_the_run(
    pytester: pytest.Pytester, name: str
) -> None:
    """DuckDB turns the signal into `RuntimeError: Query interrupted`; on main that was a
    failed parity check, exit 1. It is an interrupted run: exit 2, never a failed check."""
    pytester.makepyfile(test_parity_query=DUCKDB_INTERRUPTED.replace("{name}", name))
    audit = pytester.path / "audit"
    result = pytester.runpytest_subprocess(
        "-m", "dryrun", "-p", "no:cacheprovider", f"--audit-dir={audit}", timeout=CHILD_TIMEOUT_S
    )
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED, output[-3000:]
    assert "KeyboardInterrupt: signal" in output and " failed" not in output
    gate = json.loads((audit / "gate.json").read_text())
    assert gate["verdict"] == "NO-GO"
    assert gate["reasons"] == ["interrupted (SIGTERM or Ctrl-C) before anything was triggered"]
