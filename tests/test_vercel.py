"""Deployment Protection told apart from the app's own answers, and the bypass handled as a secret."""

from __future__ import annotations

import socketserver
import threading
from datetime import UTC, datetime

import pytest

from cron_dryrun.evidence import Redactor, format_transcripts
from cron_dryrun.rules.checks import AuthCase, exchange_problem, judge_auth_case
from cron_dryrun.target.client import CronClient, Exchange, Transcript
from cron_dryrun.target.vercel import protection_block

BYPASS = "vercel-Bypass-1f9e8d7c6b5a"
LOGIN_HTML = b"<!doctype html><html><title>Authentication Required</title></html>"


def answer(
    status: int, body: bytes, *headers: tuple[str, str], sent_bypass: bool = False
) -> Transcript:
    request = [("Authorization", "Bearer x")]
    if sent_bypass:
        request.append(("x-vercel-protection-bypass", BYPASS))
    return Transcript(
        label="main exchange",
        method="POST",
        url="https://staging.cogni-track.app/api/cron/daily-usage",
        request_headers=tuple(request),
        request_body=b"",
        started_at=datetime(2025, 10, 8, 2, tzinfo=UTC),
        status=status,
        reason={401: "Unauthorized", 403: "Forbidden", 307: "Temporary Redirect"}.get(status, "OK"),
        response_headers=headers,
        response_body=body,
    )


EDGE_401 = answer(
    401,
    LOGIN_HTML,
    ("content-type", "text/html; charset=utf-8"),
    ("set-cookie", "_vercel_sso_nonce=abc; Path=/"),
)
APP_401 = answer(401, b'{"error":"Unauthorized"}', ("content-type", "application/json"))


def test_the_edges_401_is_named_with_the_variable_to_set() -> None:
    assert protection_block(EDGE_401) == (
        "blocked by Vercel Deployment Protection before reaching the app: set "
        "VERCEL_AUTOMATION_BYPASS_SECRET (the project's Protection Bypass for Automation secret) "
        "(status 401 Unauthorized, a _vercel_sso cookie, an HTML body, Vercel's login page, no JSON)"
    )
    problem = exchange_problem(Exchange((EDGE_401,)))
    assert problem is not None
    assert problem.startswith(
        "blocked by Vercel Deployment Protection before reaching the app: set VERCEL_AUTOMATION_BYPASS_SECRET"
    )
    assert "CRON_SECRET" not in problem


@pytest.mark.parametrize(
    "t",
    [
        answer(403, b"<html>Forbidden</html>", ("content-type", "text/html")),
        answer(307, b"", ("location", "https://vercel.com/sso-api?url=https%3A%2F%2Fstaging")),
    ],
    ids=["403 html", "redirect to the login"],
)
def test_a_403_or_a_redirect_to_the_login_is_named_too(t: Transcript) -> None:
    message = protection_block(t)
    assert message is not None
    assert message.startswith("blocked by Vercel Deployment Protection before reaching the app")


def test_a_rejected_bypass_says_the_secret_is_wrong() -> None:
    t = answer(401, LOGIN_HTML, ("content-type", "text/html"), sent_bypass=True)
    assert (protection_block(t) or "").startswith(
        "blocked by Vercel Deployment Protection before reaching the app, although "
        "x-vercel-protection-bypass was sent: set VERCEL_AUTOMATION_BYPASS_SECRET to the project's "
        "current Protection Bypass for Automation secret"
    )


def test_the_apps_own_401_and_a_plain_redirect_are_not_the_edge() -> None:
    assert protection_block(APP_401) is None
    assert exchange_problem(Exchange((APP_401,))).startswith(  # type: ignore[union-attr]
        "the cron answered 401 Unauthorized to the secret: CRON_SECRET is missing or wrong"
    )
    assert protection_block(answer(302, b"", ("location", "https://example.com/x"))) is None


def test_an_auth_negative_that_met_the_edge_is_not_judged_never_passed() -> None:
    case = AuthCase("no Authorization header", None)
    assert judge_auth_case(case, EDGE_401) == (
        "no Authorization header: not judged: blocked by Vercel Deployment Protection before "
        "reaching the app: set VERCEL_AUTOMATION_BYPASS_SECRET (the project's Protection Bypass "
        "for Automation secret) (status 401 Unauthorized, a _vercel_sso cookie, an HTML body, "
        "Vercel's login page, no JSON)"
    )
    assert judge_auth_case(case, APP_401) is None


def test_the_bypass_goes_on_every_request_and_is_redacted() -> None:
    seen: list[bytes] = []

    class Capture(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            seen.append(self.request.recv(65536))
            body = b'{"error":"Unauthorized"}'
            self.request.sendall(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )

    server = socketserver.TCPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=lambda: [server.handle_request() for _ in range(2)])
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage"
    client = CronClient(url=url, secret="s3cret", bypass_secret=BYPASS, timeout_s=2)
    transcripts = [client.send("main"), client.send("auth negative", authorization=None)]
    thread.join(10)
    server.server_close()
    assert len(seen) == 2
    for head in seen:
        assert f"x-vercel-protection-bypass: {BYPASS}\r\n".encode() in head
    assert BYPASS not in repr(client)
    # redacted by name even when the value is not known to the redactor ...
    text = Redactor([]).redact(format_transcripts(transcripts))
    assert BYPASS not in text and "> x-vercel-protection-bypass: [REDACTED]" in text
    # ... and by value wherever it appears
    assert Redactor([BYPASS]).redact(f"?x-vercel-protection-bypass={BYPASS}&y").count(BYPASS) == 0


def test_the_root_cause_of_a_blocked_run_names_the_bypass_not_the_cron_secret() -> None:
    from cron_dryrun.rules.root_cause import RunSignals, find_root_cause

    problem = exchange_problem(Exchange((EDGE_401,)))
    signals = RunSignals(exchange_problem=problem, exchange_status=401)
    steps = [("prerequisites", "passed"), ("auth_smoke", "failed"), ("telemetry", "failed")]
    cause = find_root_cause(signals, steps)
    assert cause is not None
    assert cause.fix == (
        "set VERCEL_AUTOMATION_BYPASS_SECRET (the project's Protection Bypass for Automation "
        "secret), then run again"
    )


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: https://vercel.com/sso-api?url=https%3A%2F%2F"
        b"staging.cogni-track.app%2Fapi%2Fcron%2Fdaily-usage\r\nServer: Vercel\r\n",
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/html; charset=utf-8\r\nServer: Vercel\r\n",
    ],
    ids=["redirect to the login", "403 html"],
)
def test_the_edges_403_or_login_redirect_over_real_http_is_named_and_never_followed(
    head: bytes,
) -> None:
    """Through the real client over loopback: one request leaves, the redirect to vercel.com
    is not followed (no second request, the 307 is what is recorded), and the check names
    Deployment Protection, not the cron secret."""
    seen: list[bytes] = []

    class Edge(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            seen.append(self.request.recv(65536))
            body = b"<html><body>Forbidden</body></html>" if b" 403 " in head else b""
            self.request.sendall(
                head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
            )

    server = socketserver.TCPServer(("127.0.0.1", 0), Edge)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage"
    transcript = CronClient(url=url, secret="s3cret", timeout_s=2).send("main exchange")
    thread.join(10)
    server.server_close()
    assert len(seen) == 1, "exactly one request, to the loopback edge"
    assert transcript.status in (307, 403)
    problem = exchange_problem(Exchange((transcript,)))
    assert problem is not None
    assert problem.startswith("blocked by Vercel Deployment Protection before reaching the app")
    assert "CRON_SECRET" not in problem
