"""The cron client: one trigger of /api/cron/daily-usage, recorded as curl -i would show it.

Hostile-target safe: every request has a total deadline (not only per-read),
bodies are read up to a cap, redirects are never followed, and a 429 is
retried only when its Retry-After is short, a bounded number of times.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from cron_dryrun.target.content_coding import ACCEPT_ENCODING, decode_body
from cron_dryrun.target.deadline import deadline_transport
from cron_dryrun.target.tls import certificate_failure
from cron_dryrun.target.transcript import Exchange, Transcript, throttling_headers
from cron_dryrun.target.vercel import BYPASS_HEADER

MAX_BODY_BYTES = 1_000_000  # bytes read off the wire
MAX_DECODED_BYTES = 8_000_000  # bytes a compressed body may decode to
MAX_RETRIES_ON_429 = 3
MAX_RETRY_AFTER_S = 30.0

# The default Authorization header: "send the secret as the runbook does".
WITH_SECRET = object()

# Transcript and Exchange live in target.transcript, so the rules and the Vercel judge read
# them without this client; importers of this module keep finding them here
__all__ = [
    "WITH_SECRET",
    "CronClient",
    "Exchange",
    "Transcript",
    "Watch",
    "retry_after_seconds",
    "throttling_headers",
]


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Watch(Protocol):
    def started(self, label: str, method: str, url: str, timeout_s: float) -> None: ...

    def finished(self, label: str, transcript: Transcript | None) -> None: ...


@dataclass
class CronClient:
    """Triggers the cron. ``sleep`` and ``now`` are injectable so tests never wait."""

    url: str
    secret: str | None = field(repr=False)
    # VERCEL_AUTOMATION_BYPASS_SECRET: sent on every request, auth negatives included, so
    # they reach the app to be judged (Vercel Deployment Protection runs before it).
    bypass_secret: str | None = field(default=None, repr=False)
    method: str = "POST"
    timeout_s: float = 300.0
    # the trust store (tls.client_context); True: httpx's default (certifi). Never False.
    verify: ssl.SSLContext | bool = field(default=True, repr=False)
    max_body_bytes: int = MAX_BODY_BYTES
    max_decoded_bytes: int = MAX_DECODED_BYTES
    max_retries_on_429: int = MAX_RETRIES_ON_429
    max_retry_after_s: float = MAX_RETRY_AFTER_S
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    # told when each request starts and ends (watch.TerminalWatch: the run you can watch)
    watch: Watch | None = field(default=None, repr=False)
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC), repr=False)
    # told before each request leaves (its label) and after it is answered or failed: the
    # plugin records the run as triggered and appends the exchange to the smoke log at once
    on_request: Callable[[str], None] | None = field(default=None, repr=False)
    on_exchange: Callable[[Transcript], None] | None = field(default=None, repr=False)
    # the run's other secrets (DSN passwords, admin keys): an excerpt of an answer is
    # redacted with them before it is cut (Transcript.secrets)
    known_secrets: tuple[str, ...] = field(default=(), repr=False)

    def headers(self, authorization: object = WITH_SECRET) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "cron-dryrun/0.1",
            # Vercel's CDN compresses when this allows it; every coding offered is decoded.
            "Accept-Encoding": ACCEPT_ENCODING,
        }
        if self.bypass_secret:
            headers[BYPASS_HEADER] = self.bypass_secret
        if authorization is WITH_SECRET:
            headers["Authorization"] = f"Bearer {self.secret or ''}"
        elif authorization is not None:
            headers["Authorization"] = str(authorization)
        return headers

    def send(
        self, label: str, authorization: object = WITH_SECRET, method: str | None = None
    ) -> Transcript:
        """One request, never retried, never followed; a transport failure is recorded, not raised."""
        if self.on_request is not None:
            self.on_request(label)
        transcript = self._send(label, authorization, method)
        if self.on_exchange is not None:
            self.on_exchange(transcript)
        return transcript

    def _send(self, label: str, authorization: object, method: str | None) -> Transcript:
        method = (method or self.method).upper()
        if self.watch is None:
            return self._send_once(label, authorization, method)
        self.watch.started(label, method, self.url, self.timeout_s)
        transcript = None
        try:
            transcript = self._send_once(label, authorization, method)
            return transcript
        finally:
            self.watch.finished(label, transcript)

    def _send_once(self, label: str, authorization: object, method: str) -> Transcript:
        headers = self.headers(authorization)
        started = self.now()
        t0 = time.monotonic()
        deadline = t0 + self.timeout_s
        base: dict[str, Any] = {
            "label": label,
            "method": method,
            "url": self.url,
            "request_headers": tuple(headers.items()),
            "request_body": b"",
            "started_at": started,
            "secrets": tuple(
                v for v in (self.secret, self.bypass_secret, *self.known_secrets) if v
            ),
        }
        timeout = httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s))
        try:
            with (
                httpx.Client(
                    transport=deadline_transport(
                        deadline,
                        trust_env=False,
                        verify=self.verify if self.verify is not False else True,
                    ),
                    timeout=timeout,
                    follow_redirects=False,
                    trust_env=False,
                ) as http,
                http.stream(method, self.url, headers=headers) as response,
            ):
                body = bytearray()
                truncated = False
                error = None
                body_timeout = f"timed out after {self.timeout_s:g}s while reading the body (--cron-timeout / CRON_TIMEOUT)"
                try:
                    for chunk in response.iter_raw():
                        body.extend(chunk)
                        if len(body) > self.max_body_bytes:
                            del body[self.max_body_bytes :]
                            truncated = True
                            error = f"response body larger than {self.max_body_bytes} bytes; read stopped there"
                            break
                        if time.monotonic() > deadline:
                            error = body_timeout
                            truncated = True
                            break
                except httpx.TimeoutException:  # the transport's deadline, between two chunks
                    error = body_timeout
                    truncated = True
                encoding = response.headers.get("content-encoding", "")
                decoded = decode_body(bytes(body), encoding, self.max_decoded_bytes)
                if decoded.error:
                    truncated = truncated or decoded.cut
                    error = error or decoded.error
                return Transcript(
                    **base,
                    elapsed_s=time.monotonic() - t0,
                    status=response.status_code,
                    reason=response.reason_phrase,
                    http_version=response.http_version,
                    response_headers=tuple(response.headers.multi_items()),
                    response_body=decoded.body,
                    body_truncated=truncated,
                    error=error,
                    raw_size=len(body),
                    content_encoding=encoding,
                )
        except httpx.TimeoutException as exc:
            error = f"timed out after {self.timeout_s:g}s ({type(exc).__name__}; the deadline covers connect, headers and body); raise --cron-timeout / CRON_TIMEOUT if the cron is just slow"
        except httpx.HTTPError as exc:
            host = httpx.URL(self.url).host
            error = certificate_failure(exc, host) or f"{type(exc).__name__}: {exc}"
        return Transcript(**base, elapsed_s=time.monotonic() - t0, error=error)

    def trigger(self, label: str = "main") -> Exchange:
        """The runbook's trigger; a 429 with a short Retry-After is retried, boundedly."""
        attempts: list[Transcript] = []
        budget_deadline = time.monotonic() + self.timeout_s
        for attempt in range(self.max_retries_on_429 + 1):
            transcript = self.send(label if attempt == 0 else f"{label} (retry {attempt})")
            attempts.append(transcript)
            if transcript.status != 429:
                return Exchange(tuple(attempts))
            wait = retry_after_seconds(transcript.header("retry-after"), self.now())
            if wait is None:
                wait = 1.0  # a 429 without Retry-After: back off briefly once more
            if wait > self.max_retry_after_s:
                return Exchange(
                    tuple(attempts),
                    note=(
                        f"throttled: 429 with Retry-After {transcript.header('retry-after')!r} "
                        f"(~{wait:.0f}s), longer than the {self.max_retry_after_s:.0f}s this client waits; "
                        "not retried - trigger again after that time"
                    ),
                )
            if attempt == self.max_retries_on_429 or time.monotonic() + wait > budget_deadline:
                break
            self.sleep(wait)  # honouring the server's Retry-After, not waiting for readiness
        return Exchange(
            tuple(attempts),
            note=f"still throttled (429) after {len(attempts)} attempts; not retried further",
        )
