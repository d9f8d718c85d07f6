"""A run you can watch: trigger lines, the elapsed time on a terminal, durations in the record."""

from __future__ import annotations

import socket
import threading
from dataclasses import replace
from datetime import UTC, datetime

from test_client import http, raw_server

from cron_dryrun.target.client import CronClient, Transcript
from cron_dryrun.target.watch import TerminalWatch, exchange_durations


def t(label: str, status: int | None, seconds: float) -> Transcript:
    return Transcript(
        label=label,
        method="POST",
        url="https://staging.cogni-track.app/api/cron/daily-usage",
        request_headers=(),
        request_body=b"",
        started_at=datetime(2025, 10, 8, 2, tzinfo=UTC),
        elapsed_s=seconds,
        status=status,
        reason={200: "OK", 401: "Unauthorized"}.get(status or 0, ""),
        error=None if status else "timed out after 300s",
    )


def test_every_exchange_duration_in_one_line() -> None:
    transcripts = [
        t("main exchange", 200, 61.234),
        t("auth negative: no Authorization header", 401, 0.02),
        t("auth negative: token 'null'", 401, 0.05),
        replace(t("idempotent rerun", None, 300.0)),
    ]
    assert exchange_durations(transcripts) == (
        "main exchange 200 OK in 61.23 s; idempotent rerun no answer (timed out after 300s) in "
        "300.00 s; 2 auth negatives 401 in 0.02-0.05 s each (0.07 s in all)"
    )
    assert exchange_durations([]) == "none"


def test_a_plain_line_when_each_request_starts_and_ends_off_a_terminal() -> None:
    lines: list[str] = []
    with raw_server(
        lambda c, _: c.sendall(http("200 OK", b"{}", "Content-Type: application/json"))
    ) as url:
        client = CronClient(url=url, secret="s", timeout_s=5, watch=TerminalWatch(lines.append))
        client.trigger("main exchange")
    assert lines[0] == f"triggering POST {url} (main exchange), waiting up to 5 s"
    assert lines[1].startswith("main exchange: 200 OK in ") and lines[1].endswith(" s")
    assert len(lines) == 2


def test_the_elapsed_time_is_redrawn_on_a_terminal_while_waiting() -> None:
    lines: list[str] = []
    ticks: list[str] = []
    two_ticks = threading.Event()

    def tick(text: str) -> None:
        ticks.append(text)
        if len([x for x in ticks if x]) >= 2:
            two_ticks.set()

    def respond(conn: socket.socket, _: int) -> None:
        two_ticks.wait(10)  # the cron answers once the watcher has shown it waiting (bounded)
        conn.sendall(http("200 OK", b"{}", "Content-Type: application/json"))

    with raw_server(respond) as url:
        watch = TerminalWatch(lines.append, tick, interval_s=0.05)
        CronClient(url=url, secret="s", timeout_s=20, watch=watch).trigger("main exchange")
    assert two_ticks.is_set()
    assert ticks[0].startswith("  main exchange: waiting, ") and ticks[0].endswith(" s elapsed")
    assert ticks[-1] == ""  # the redrawn line is cleared before the result line
    assert lines[-1].startswith("main exchange: 200 OK in ")
