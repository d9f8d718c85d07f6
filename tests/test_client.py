"""The cron client against hostile targets: tiny servers on loopback, each wrong in one way.

The run must never hang, never follow a redirect, never wait an hour, and always
leave a transcript to put in the evidence.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from cron_dryrun.evidence import format_transcripts
from cron_dryrun.rules.checks import exchange_problem
from cron_dryrun.target.client import CronClient

Handler = Callable[[socket.socket, int], None]


@contextmanager
def raw_server(respond: Handler) -> Iterator[str]:
    """A TCP server on 127.0.0.1 that reads one request head, then lets ``respond`` misbehave."""
    hits = {"n": 0}

    class _Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            conn: socket.socket = self.request
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            hits["n"] += 1
            # OSError: the client hung up, as it should on a hostile answer
            with contextlib.suppress(OSError):
                respond(conn, hits["n"])

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage"
    finally:
        server.shutdown()
        server.server_close()


def http(status: str, body: bytes, *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers, "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def client(url: str, **kw: object) -> CronClient:
    sleeps: list[float] = []
    c = CronClient(
        url=url, secret="test-secret", timeout_s=kw.pop("timeout_s", 2.0), sleep=sleeps.append, **kw
    )  # type: ignore[arg-type]
    c.sleeps = sleeps  # type: ignore[attr-defined]
    return c


def test_huge_body_is_capped_and_fails_cleanly() -> None:
    def respond(conn: socket.socket, _: int) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 52428800\r\n\r\n"
        )
        block = b"[" * 65536
        for _ in range(800):  # 50 MB, bounded
            conn.sendall(block)

    with raw_server(respond) as url:
        exchange = client(url, max_body_bytes=100_000).trigger()
    t = exchange.final
    assert t.status == 200 and t.body_truncated and len(t.response_body) == 100_000
    assert exchange_problem(exchange).startswith(
        "the answer could not be read whole: response body larger than 100000 bytes; read stopped there"
    )


def test_body_that_never_ends_hits_the_deadline() -> None:
    def respond(conn: socket.socket, _: int) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        deadline = time.monotonic() + 30  # bounded even if the client never hangs up
        while time.monotonic() < deadline:
            conn.sendall(b"1\r\n{\r\n")
            time.sleep(0.01)  # trickle: a server that never finishes, not a readiness wait

    with raw_server(respond) as url:
        started = time.monotonic()
        exchange = client(url, timeout_s=1.0).trigger()
        elapsed = time.monotonic() - started
    assert elapsed < 20, "the client must stop reading at its deadline"
    assert (
        exchange.final.error
        == "timed out after 1s while reading the body (--cron-timeout / CRON_TIMEOUT)"
    )
    assert exchange_problem(exchange).startswith(
        "the answer could not be read whole: timed out after 1s"
    )


def test_malformed_json() -> None:
    with raw_server(
        lambda c, _: c.sendall(http("200 OK", b'{"success": tru', "Content-Type: application/json"))
    ) as url:
        exchange = client(url).trigger()
    assert exchange_problem(exchange) == (
        'expected a JSON body, got status 200 OK, content type application/json, body: {"success": tru'
    )


def test_json_that_is_not_an_object() -> None:
    with raw_server(
        lambda c, _: c.sendall(http("200 OK", b'"ok"', "Content-Type: application/json"))
    ) as url:
        exchange = client(url).trigger()
    assert (
        exchange_problem(exchange)
        == 'expected a JSON object, got str: status 200 OK, content type application/json, body: "ok"'
    )


def test_redirect_to_another_host_is_not_followed() -> None:
    with raw_server(
        lambda c, _: c.sendall(http("302 Found", b"", "Location: http://203.0.113.9/steal"))
    ) as url:
        exchange = client(url).trigger()
    assert len(exchange.attempts) == 1 and exchange.final.status == 302
    assert exchange_problem(exchange).startswith(
        "the cron answered a 302 redirect to http://203.0.113.9/steal; redirects are not followed"
    )


def test_retry_after_of_an_hour_is_not_waited() -> None:
    with raw_server(
        lambda c, _: c.sendall(http("429 Too Many Requests", b"{}", "Retry-After: 3600"))
    ) as url:
        c = client(url)
        exchange = c.trigger()
    assert c.sleeps == []  # type: ignore[attr-defined]
    assert exchange_problem(exchange).startswith(
        "throttled: 429 with Retry-After '3600' (~3600s), longer than the 30s this client waits; "
        "not retried - trigger again after that time"
    )
    assert exchange.throttling_headers == {"retry-after": "3600"}


def test_short_retry_after_is_honoured_once_then_succeeds() -> None:
    def respond(conn: socket.socket, n: int) -> None:
        if n == 1:
            conn.sendall(
                http("429 Too Many Requests", b"{}", "Retry-After: 1", "X-RateLimit-Remaining: 0")
            )
        else:
            conn.sendall(http("200 OK", b'{"success": true}', "Content-Type: application/json"))

    with raw_server(respond) as url:
        c = client(url)
        exchange = c.trigger()
    assert c.sleeps == [1.0]  # type: ignore[attr-defined]
    assert [a.status for a in exchange.attempts] == [429, 200]
    assert exchange_problem(exchange) is None
    assert exchange.throttling_headers == {"retry-after": "1", "x-ratelimit-remaining": "0"}


def test_persistent_429_is_bounded() -> None:
    with raw_server(
        lambda c, _: c.sendall(http("429 Too Many Requests", b"{}", "Retry-After: 0"))
    ) as url:
        c = client(url)
        exchange = c.trigger()
    assert len(exchange.attempts) == 4
    assert exchange.note == "still throttled (429) after 4 attempts; not retried further"


def test_connection_reset() -> None:
    def respond(conn: socket.socket, _: int) -> None:
        conn.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )  # close with RST

    with raw_server(respond) as url:
        exchange = client(url).trigger()
    assert exchange.final.status is None
    problem = exchange_problem(exchange)
    assert problem.startswith(f"POST {exchange.final.url} failed: ")
    assert "Error" in problem


def test_slow_answer_times_out_with_the_option_named() -> None:
    gate = threading.Event()

    def respond(conn: socket.socket, _: int) -> None:
        gate.wait(10)  # answers only after the client gave up (bounded)

    with raw_server(respond) as url:
        exchange = client(url, timeout_s=0.5).trigger()
        gate.set()
    assert exchange_problem(exchange).endswith(
        "raise --cron-timeout / CRON_TIMEOUT if the cron is just slow"
    )


def test_the_secret_is_sent_as_bearer_and_get_is_an_option() -> None:
    seen: list[bytes] = []

    class Capture(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            seen.append(self.request.recv(65536))
            self.request.sendall(http("200 OK", b"{}", "Content-Type: application/json"))

    server = socketserver.TCPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage"
    CronClient(url=url, secret="s3cret", method="GET", timeout_s=2).trigger()
    thread.join(5)
    server.server_close()
    head = seen[0].decode()
    assert head.startswith("GET /api/cron/daily-usage HTTP/1.1")
    assert "authorization: Bearer s3cret" in head.lower().replace("bearer s3cret", "Bearer s3cret")


@pytest.mark.parametrize(
    ("value", "seconds"), [("5", 5.0), ("Wed, 08 Oct 2025 02:01:00 GMT", 60.0), ("soon", None)]
)
def test_retry_after_forms(value: str, seconds: float | None) -> None:
    from datetime import UTC, datetime

    from cron_dryrun.target.client import retry_after_seconds

    assert retry_after_seconds(value, datetime(2025, 10, 8, 2, 0, tzinfo=UTC)) == seconds


COMPRESSED_BODY = b'{"success": true, "telemetry": {"windowsProcessed": 8}}'


def _compressors() -> dict[str, Callable[[bytes], bytes]]:
    import brotli
    import zstandard

    return {
        "gzip": gzip.compress,
        "br": brotli.compress,
        "zstd": zstandard.ZstdCompressor().compress,
    }


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_compressed_answer_is_decoded_and_logged_with_both_sizes(coding: str) -> None:
    raw = _compressors()[coding](COMPRESSED_BODY)

    def respond(conn: socket.socket, _: int) -> None:
        conn.sendall(
            http("200 OK", raw, "Content-Type: application/json", f"Content-Encoding: {coding}")
        )

    with raw_server(respond) as url:
        exchange = client(url).trigger()
    t = exchange.final
    assert exchange_problem(exchange) is None
    assert t.json_body() == {"success": True, "telemetry": {"windowsProcessed": 8}}
    assert (t.raw_size, len(t.response_body)) == (len(raw), len(COMPRESSED_BODY))
    log = format_transcripts([t])
    assert "> Accept-Encoding: gzip, deflate, br, zstd\n" in log
    assert f"< content-encoding: {coding}\n" in log  # the headers as received
    assert (
        f"# body: content-encoding {coding}, {len(raw)} bytes received, "
        f"{len(COMPRESSED_BODY)} bytes decoded\n" + COMPRESSED_BODY.decode()
    ) in log


def test_a_decompression_bomb_fails_the_exchange_without_filling_memory() -> None:
    bomb = gzip.compress(b" " * 30_000_000)  # 30 MB of JSON whitespace in ~30 KB

    def respond(conn: socket.socket, _: int) -> None:
        conn.sendall(
            http("200 OK", bomb, "Content-Type: application/json", "Content-Encoding: gzip")
        )

    with raw_server(respond) as url:
        exchange = client(url, max_decoded_bytes=1_000_000).trigger()
    t = exchange.final
    assert len(t.response_body) == 1_000_000 and t.body_truncated
    assert exchange_problem(exchange).startswith(
        f"the answer could not be read whole: the gzip body decodes to more than 1000000 bytes "
        f"({len(bomb)} bytes on the wire): a decompression bomb or an oversized answer"
    )
