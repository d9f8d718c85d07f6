"""The network guard child test runs use: a non-loopback connection is refused and recorded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from suite_runs import clean_env, guarded_env, netguard_attempts

PROBE = r"""
import socket, threading
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
port = server.getsockname()[1]
with socket.create_connection(("127.0.0.1", port), timeout=2):
    print("loopback ok")
with socket.create_connection(("localhost", port), timeout=2):
    print("localhost ok")
for attempt in (
    lambda: socket.socket().connect(("192.0.2.1", 443)),
    lambda: socket.create_connection(("staging.cogni-track.app", 443), timeout=2),
):
    try:
        attempt()
    except OSError as exc:
        print("refused:", exc)
"""


def test_guard_refuses_and_records_non_loopback_and_lets_loopback_through(tmp_path: Path) -> None:
    log = tmp_path / "netguard.jsonl"
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=guarded_env(clean_env(), log),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "loopback ok" in result.stdout and "localhost ok" in result.stdout
    assert result.stdout.count("refused: [Errno 101] netguard:") == 2, result.stdout
    attempts = netguard_attempts(log)
    assert [(a["event"], a["host"]) for a in attempts] == [
        ("socket.connect", "'192.0.2.1'"),
        ("socket.getaddrinfo", "'staging.cogni-track.app'"),
    ]
