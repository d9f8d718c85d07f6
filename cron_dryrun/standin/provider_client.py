"""How the stand-in cron reads the (stand-in) OpenAI usage API: over HTTP, like the app.

Every request has a timeout; retries (429 with Retry-After, 5xx, transport errors)
are bounded both in count and in total time; pagination follows ``next_page`` up to
a page cap. Failures surface as ``ScopeMissing`` or ``ProviderError`` for the cron's
``issuesByCode``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

import httpx

from cron_dryrun.errors import CronDryrunError
from cron_dryrun.standin.usage_truth import GROUP_FIELDS, epoch
from cron_dryrun.target.client import retry_after_seconds

ADMIN_GROUP_BY = ",".join(GROUP_FIELDS)


class ProviderError(CronDryrunError, RuntimeError):
    """The provider failed for a key; ``code`` is the issuesByCode entry it counts under."""

    def __init__(self, message: str, code: str = "PROVIDER_ERROR") -> None:
        super().__init__(message)
        self.code = code


class ScopeMissing(ProviderError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="SCOPE_MISSING")


class UsageApiClient:
    """A small synchronous client of the stand-in usage API, one per cron run."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 3,
        retry_budget_s: float = 10.0,
        max_retry_after_s: float = 5.0,
        max_pages: int = 200,
        page_limit: int = 31,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 3.0)),
            follow_redirects=False,
            # Loading the CA bundle costs ~40 ms per run; only an https provider needs it.
            verify=base_url.startswith("https://"),
        )
        self.max_attempts = max_attempts
        self.retry_budget_s = retry_budget_s
        self.max_retry_after_s = max_retry_after_s
        self.max_pages = max_pages
        self.page_limit = page_limit

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> UsageApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: Mapping[str, Any], api_key: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.retry_budget_s
        last = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            wait = 0.05 * 2**attempt  # backoff between attempts; 429 overrides it below
            try:
                response = self._http.get(
                    path, params=params, headers={"Authorization": f"Bearer {api_key}"}
                )
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError:
                        raise ProviderError(
                            f"GET {path}: 200 with a body that is not JSON"
                        ) from None
                    if not isinstance(body, dict):
                        raise ProviderError(f"GET {path}: 200 with JSON that is not an object")
                    return body
                last = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code == 403:
                    raise ScopeMissing(f"GET {path}: {last}")
                if response.status_code == 401:
                    raise ProviderError(f"GET {path}: {last}", code="UNAUTHORIZED")
                if response.status_code == 429:
                    asked = retry_after_seconds(response.headers.get("retry-after"))
                    if asked is not None and asked > self.max_retry_after_s:
                        raise ProviderError(
                            f"GET {path}: 429 asks to wait {asked:.0f}s, more than we wait"
                        )
                    wait = asked if asked is not None else wait
                elif response.status_code < 500:
                    raise ProviderError(f"GET {path}: {last}")
            if attempt == self.max_attempts or time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
        raise ProviderError(f"GET {path}: gave up after {attempt} attempt(s): {last}")

    def completions(
        self, api_key: str, start: datetime, end: datetime, *, bucket_width: str = "1d"
    ) -> list[dict[str, Any]]:
        """Every bucket of the admin completions endpoint in [start, end), all pages."""
        params: dict[str, Any] = {
            "start_time": epoch(start),
            "end_time": epoch(end),
            "bucket_width": bucket_width,
            "limit": self.page_limit,
            "group_by": ADMIN_GROUP_BY,
        }
        buckets: list[dict[str, Any]] = []
        for _ in range(self.max_pages):
            page = self._get("/v1/organization/usage/completions", params, api_key)
            buckets.extend(page.get("data") or [])
            cursor = page.get("next_page")
            if not page.get("has_more") or not cursor:
                return buckets
            params = {**params, "page": cursor}
        raise ProviderError(
            f"more than {self.max_pages} pages of usage; refusing to follow further"
        )

    def legacy_entries(self, api_key: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Legacy /v1/usage entries of every UTC date [start, end) touches."""
        entries: list[dict[str, Any]] = []
        day: date = start.date()
        last_day = (end - timedelta(microseconds=1)).date()
        while day <= last_day:
            body = self._get("/v1/usage", {"date": day.isoformat()}, api_key)
            entries.extend(body.get("data") or [])
            day += timedelta(days=1)
        return entries
