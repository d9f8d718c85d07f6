"""What the client records: one HTTP request and its answer (``Transcript``), the main
trigger's attempts (``Exchange``). Plain records, no I/O: the rules, the evidence and the
Vercel judge read them without importing the client that makes them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cron_dryrun.bounds import loads_bounded

THROTTLING_PREFIXES = ("ratelimit-", "x-ratelimit-")


@dataclass(frozen=True)
class Transcript:
    """One HTTP request and its answer (or the transport failure), raw."""

    label: str
    method: str
    url: str
    request_headers: tuple[tuple[str, str], ...] = field(repr=False)  # Authorization
    request_body: bytes
    started_at: datetime
    elapsed_s: float = 0.0
    status: int | None = None
    reason: str = ""
    http_version: str = "HTTP/1.1"
    response_headers: tuple[tuple[str, str], ...] = ()
    response_body: bytes = b""
    body_truncated: bool = False
    error: str | None = None
    # The body as received was ``raw_size`` bytes in ``content_encoding``; response_body
    # holds it decoded. None: nothing was received.
    raw_size: int | None = None
    content_encoding: str = ""
    # what the answer must not show, should it echo the request: the cron secret, the
    # bypass secret and the run's other secrets (describe_answer redacts with them, then cuts)
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def body_sizes(self) -> str:
        """E.g. "content-encoding br, 312 bytes received, 1204 bytes decoded"."""
        received = self.raw_size if self.raw_size is not None else len(self.response_body)
        if not self.content_encoding:
            return f"no content-encoding, {received} bytes received"
        return (
            f"content-encoding {self.content_encoding}, {received} bytes received, "
            f"{len(self.response_body)} bytes decoded"
        )

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.response_headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def content_type(self) -> str:
        return self.header("content-type") or "(none)"

    def body_text(self, limit: int | None = None) -> str:
        text = self.response_body.decode("utf-8", errors="replace")
        return text if limit is None else text[:limit]

    def json_body(self) -> Any:
        """The parsed body; raises ValueError when it is not JSON, nests deeper than
        bounds.MAX_JSON_DEPTH or holds NaN/Infinity (never RecursionError)."""
        return loads_bounded(self.response_body.decode("utf-8"))

    @property
    def throttling_headers(self) -> dict[str, str]:
        return throttling_headers(self.response_headers)


def throttling_headers(headers: tuple[tuple[str, str], ...] | Mapping[str, str]) -> dict[str, str]:
    """Retry-After, RateLimit-*, X-RateLimit-* (any case), as the runbook asks to record."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    found: dict[str, str] = {}
    for key, value in items:
        lkey = key.lower()
        if lkey == "retry-after" or lkey.startswith(THROTTLING_PREFIXES):
            found[key] = value
    return found


@dataclass(frozen=True)
class Exchange:
    """The main trigger: every attempt (429 retries included) and what came of it."""

    attempts: tuple[Transcript, ...]
    note: str | None = None  # e.g. why a 429 was not retried

    @property
    def final(self) -> Transcript:
        return self.attempts[-1]

    @property
    def throttling_headers(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for attempt in self.attempts:
            merged.update(attempt.throttling_headers)
        return merged
