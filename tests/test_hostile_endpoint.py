"""A hostile endpoint cannot hang or crash the run: one wall-clock deadline over the whole
exchange, bounded JSON depth, bounded attachments, non-numeric telemetry as a failed check."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from suite_runs import clean_env, guarded_env, netguard_attempts, run_acceptance
from test_client import client, raw_server
from test_client import http as http_answer

from cron_dryrun.bounds import MAX_ATTACHMENT_CHARS, json_depth_exceeds, loads_bounded, truncated
from cron_dryrun.config.settings import Settings
from cron_dryrun.redaction import Redactor
from cron_dryrun.rules.checks import exchange_problem, reported_writes
from cron_dryrun.target.database import create_app_database, database_name, drop_database
from cron_dryrun.testing import DryRunState, Evidence


def test_headers_trickled_one_line_at_a_time_hit_the_whole_exchange_deadline() -> None:
    """The issue's server: 200 OK, then a header line a second; 3 s reads never time out."""

    def respond(conn: socket.socket, _: int) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        stop = time.monotonic() + 30  # bounded even if the client never hangs up
        n = 0
        while time.monotonic() < stop:
            conn.sendall(f"X-Trickle-{n}: still here\r\n".encode())
            n += 1
            time.sleep(0.2)  # the hostile server's pace, not a readiness wait

    with raw_server(respond) as url:
        started = time.monotonic()
        exchange = client(url, timeout_s=1.0).trigger()
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"the exchange took {elapsed:.1f}s past a 1 s deadline"
    assert exchange.final.status is None
    assert exchange_problem(exchange) == (
        f"POST {url} failed: timed out after 1s (ReadTimeout; the deadline covers connect, "
        "headers and body); raise --cron-timeout / CRON_TIMEOUT if the cron is just slow"
    )


def test_a_json_bomb_is_refused_unparsed_with_a_message() -> None:
    bomb = b'{"a":' * 100_000
    with raw_server(
        lambda c, _: c.sendall(http_answer("200 OK", bomb, "Content-Type: application/json"))
    ) as url:
        exchange = client(url).trigger()
    problem = exchange_problem(exchange)
    assert problem is not None and problem.startswith(
        "the JSON body was refused: JSON nested deeper than 64 levels: refused unparsed "
        '(a JSON bomb?); status 200 OK, content type application/json, body: {"a":{"a":'
    )


def test_json_depth_and_constants_are_bounded() -> None:
    assert loads_bounded('{"a": [1, {"b": "[[[[{{{{"}]}') == {"a": [1, {"b": "[[[[{{{{"}]}
    deep_ok = "[" * 64 + "]" * 64
    assert not json_depth_exceeds(deep_ok) and loads_bounded(deep_ok) is not None
    assert json_depth_exceeds("[" * 65 + "]" * 65)
    # brackets inside strings (escaped quotes too) do not count; siblings do not add up
    assert not json_depth_exceeds(json.dumps({"s": '\\"' + "[" * 500, "l": [[1]] * 500}))
    with pytest.raises(ValueError, match="nested deeper than 64 levels"):
        loads_bounded('{"a":' * 100_000)
    with pytest.raises(ValueError, match="NaN is not JSON"):
        loads_bounded('{"storedEvents": NaN}')


def test_attachments_are_bounded_and_say_how_much_was_cut() -> None:
    state = DryRunState(settings=Settings())
    Evidence(state, "t::x").attach("huge", "y" * 5_000_000)
    ((title, text),) = state.attachments["t::x"]
    assert title == "huge" and len(text) < MAX_ATTACHMENT_CHARS + 10_000
    assert text.endswith(
        f"[truncated by cron-dryrun: {5_000_000 - MAX_ATTACHMENT_CHARS - 4096:,} of 5,000,000 "
        f"characters cut (bound {MAX_ATTACHMENT_CHARS:,}); the smoke log holds the exchange]"
    )
    # a secret across the cut is redacted whole, never left half visible
    secret = "Straddling-Secret-0123456789"
    text = "z" * (MAX_ATTACHMENT_CHARS - 10) + secret + "z" * 100
    cut = truncated(text, transform=Redactor([secret]).redact)
    assert secret[:10] not in cut and cut.startswith("z" * (MAX_ATTACHMENT_CHARS - 10) + "[REDACT")


@pytest.mark.parametrize(
    ("telemetry", "expected"),
    [
        ({"storedEvents": 3, "updatedEvents": 2}, (5, None)),
        ({}, (0, None)),
        (
            {"storedEvents": "many", "updatedEvents": 1},
            (1, 'telemetry.storedEvents is "many", expected a whole number of events'),
        ),
        (
            {"storedEvents": 1.5, "updatedEvents": True},
            (
                0,
                "telemetry.storedEvents is 1.5, expected a whole number of events; "
                "telemetry.updatedEvents is true, expected a whole number of events",
            ),
        ),
        (
            {"storedEvents": float("inf")},
            (0, "telemetry.storedEvents is Infinity, expected a whole number of events"),
        ),
    ],
)
def test_reported_writes_never_crash(telemetry: dict, expected: tuple) -> None:
    assert reported_writes(telemetry) == expected


class _ManyEvents(http.server.BaseHTTPRequestHandler):
    """A cron that answers 200 with telemetry.storedEvents "many"."""

    def do_POST(self) -> None:
        body = json.dumps(
            {
                "success": True,
                "processed": 0,
                "successful": 0,
                "errors": 0,
                "warningCount": 0,
                "timestamp": "2025-10-08T20:04:17.123Z",
                "flags": {"enableDailyUsageWindows": True},
                "telemetry": {"storedEvents": "many", "updatedEvents": 0, "windowsProcessed": 0},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


def test_non_numeric_telemetry_is_a_failed_check_not_a_crash(
    tmp_path: Path, pg_server: Any
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ManyEvents)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app_dsn = create_app_database(pg_server.dsn)
    export = tmp_path / "export.csv"
    export.write_text(
        "start_time,end_time,project_id,num_model_requests,user_id,api_key_id,model,"
        "input_tokens,output_tokens\n"
    )
    log = tmp_path / "netguard.jsonl"
    try:
        result = run_acceptance(
            f"--audit-dir={tmp_path / 'audit'}",
            "-k",
            "window",
            env=guarded_env(
                clean_env(
                    CRON_URL=f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage",
                    CRON_SECRET="many-events-secret-0123",
                    DATABASE_URL=app_dsn,
                    OPENAI_EXPORT=str(export),
                ),
                log,
            ),
        )
    finally:
        server.shutdown()
        server.server_close()
        drop_database(pg_server.dsn, database_name(app_dsn))
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    assert "ValueError" not in result.stdout
    gate = json.loads((tmp_path / "audit" / "gate.json").read_text())
    (check,) = [c for c in gate["checks"] if c["name"] == "window_scoping"]
    assert check["status"] == "failed"
    assert check["reason"] == 'telemetry.storedEvents is "many", expected a whole number of events'
    assert netguard_attempts(log) == []


HOSTILE_BODY = b"\x1b[2J\x1b[H\x1b[32mverdict: GO\x1b[0m\x9b1;1H\r"


class _ScreenDrawing(http.server.BaseHTTPRequestHandler):
    """A cron that answers 500 with a body that clears the screen and draws "verdict: GO"."""

    def do_POST(self) -> None:
        self.send_response(500, "Internal \x1b[2J Error")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(HOSTILE_BODY)))
        self.end_headers()
        self.wfile.write(HOSTILE_BODY)

    def log_message(self, *args: object) -> None:
        return


def test_a_body_with_terminal_escapes_is_shown_escaped_everywhere(
    tmp_path: Path, pg_server: Any
) -> None:
    """On main the 500 body's ESC[2J ESC[H reached the terminal as is: the screen read
    "verdict: GO" while gate.json said NO-GO."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ScreenDrawing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app_dsn = create_app_database(pg_server.dsn)
    export = tmp_path / "export.csv"
    export.write_text(
        "start_time,end_time,project_id,num_model_requests,user_id,api_key_id,model,"
        "input_tokens,output_tokens\n"
    )
    audit = tmp_path / "audit"
    step_summary = tmp_path / "step-summary.md"
    log = tmp_path / "netguard.jsonl"
    try:
        result = run_acceptance(
            f"--audit-dir={audit}",
            env=guarded_env(
                clean_env(
                    CRON_URL=f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage",
                    CRON_SECRET="screen-drawing-secret-0123",
                    DATABASE_URL=app_dsn,
                    OPENAI_EXPORT=str(export),
                    GITHUB_ACTIONS="true",
                    GITHUB_STEP_SUMMARY=str(step_summary),
                ),
                log,
            ),
        )
    finally:
        server.shutdown()
        server.server_close()
        drop_database(pg_server.dsn, database_name(app_dsn))
    output = result.stdout + result.stderr
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, output[-3000:]
    assert "verdict: NO-GO" in output
    assert "\\x1b[2J\\x1b[H" in output  # shown, escaped
    written = {
        "terminal": output.encode(),
        "annotations": "\n".join(x for x in output.splitlines() if x.startswith("::")).encode(),
        "step summary": step_summary.read_bytes(),
        "summary.md": (audit / "cron-dry-run" / "summary.md").read_bytes(),
        "gate.json": (audit / "gate.json").read_bytes(),
        "report.html": (audit / "report.html").read_bytes(),
    }
    (notes,) = (audit / "cron-dry-run").glob("notes-*.md")
    written["notes"] = notes.read_bytes()
    for where, data in written.items():
        for raw in (b"\x1b", "\x9b".encode(), b"\x07"):
            assert raw not in data, (where, raw)
    assert b"\\x1b[2J" in written["summary.md"] + written["step summary"]
    assert netguard_attempts(log) == []
