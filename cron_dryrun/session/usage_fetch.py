"""OpenAI usage straight from the organisation usage API (contract.md section 5).

``GET /v1/organization/usage/completions`` with ``bucket_width=1d`` and every grouping the
parity key needs, following ``next_page`` until ``has_more`` is false, once per admin key
(one key per organisation). The pages are written unchanged as JSON, the format the export
readers already accept: one folder per organisation (``org-<n>``, n the key's place in
``OPENAI_ADMIN_KEYS``), a ``.sha256`` beside each page.

Bounded everywhere: each request has a timeout; a 429 waits its ``Retry-After`` (at most
``max_wait_s``), a 5xx or a transport error backs off; at most ``max_attempts`` per page,
``MAX_PAGES`` pages per organisation and ``deadline_s`` for the whole fetch. Admin keys
come from the environment only and never appear in what is printed or written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cron_dryrun.config.settings import AdminKey, normalise_base_url
from cron_dryrun.errors import CronDryrunError
from cron_dryrun.evidence import EvidenceWriter, sha256_file
from cron_dryrun.target.client import retry_after_seconds

COMPLETIONS_PATH = "/v1/organization/usage/completions"
GROUP_BY = "project_id,user_id,api_key_id,model,batch,service_tier"
# Buckets per page: the API's maximum for 1d buckets (31), so a day range is one or two pages.
PAGE_LIMIT = {"1d": 31, "1h": 168, "1m": 1440}
MAX_PAGES = 1000
MAX_ATTEMPTS = 5
MAX_RETRY_AFTER_S = 60.0
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)
REQUEST_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
DEADLINE_S = 900.0


class UsageFetchError(CronDryrunError, RuntimeError):
    """The usage could not be fetched; the message names the organisation and what to do."""


@dataclass(frozen=True)
class UsageQuery:
    """The days to fetch, [start, end), and how."""

    start: datetime
    end: datetime
    bucket_width: str = "1d"
    group_by: str = GROUP_BY
    limit: int | None = None  # buckets per page; None: the API's maximum for the width

    @classmethod
    def for_days(cls, first_day: date, last_day: date, bucket_width: str = "1d") -> UsageQuery:
        start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC)
        end = datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC) + timedelta(days=1)
        return cls(start, end, bucket_width)

    def params(self, page: str | None) -> dict[str, str]:
        params = {
            "start_time": str(int(self.start.timestamp())),
            "end_time": str(int(self.end.timestamp())),
            "bucket_width": self.bucket_width,
            "limit": str(self.limit or PAGE_LIMIT[self.bucket_width]),
            "group_by": self.group_by,
        }
        if page:
            params["page"] = page
        return params


@dataclass(frozen=True)
class OrgUsage:
    """One organisation's pages, as the API sent them, and how it went."""

    index: int  # 1-based place of the key in OPENAI_ADMIN_KEYS
    pages: tuple[dict[str, Any], ...]
    requests: int
    retries: int
    waited_s: float

    @property
    def buckets(self) -> int:
        return sum(len(p.get("data") or ()) for p in self.pages)

    @property
    def results(self) -> int:
        return sum(len(b.get("results") or ()) for p in self.pages for b in p.get("data") or ())


@dataclass
class _Budget:
    deadline: float
    clock: Callable[[], float]
    sleep: Callable[[float], None]
    requests: int = 0
    retries: int = 0
    waited_s: float = 0.0


def _error_text(response: httpx.Response, key: str) -> str:
    """The API's own words, without the admin key: redacted in full first, then cut (a key
    quoted across the cut would leave its head behind)."""
    from cron_dryrun.redaction import Redactor, known_secrets, redacted_excerpt

    redact = Redactor(known_secrets(None, extra=[key])).redact
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    except ValueError:
        message = None
    if not message:
        message = redacted_excerpt(response.text, 200, redact)[0].strip() or "(empty body)"
    return " ".join(redact(str(message)).split())


def _org(index: int, of: int) -> str:
    return f"organisation {index}" + (f" of {of}" if of > 1 else "")


def _get_page(
    client: httpx.Client,
    url: str,
    key: str,
    params: dict[str, str],
    where: str,
    budget: _Budget,
    *,
    max_attempts: int,
    max_wait_s: float,
) -> dict[str, Any]:
    last = ""
    for attempt in range(1, max_attempts + 1):
        budget.requests += 1
        try:
            response = client.get(url, params=params, headers={"Authorization": f"Bearer {key}"})
        except httpx.TransportError as exc:
            last = f"{type(exc).__name__}: {exc}"
            wait = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
        else:
            status = response.status_code
            if status == 200:
                try:
                    page = response.json()
                except ValueError:
                    raise UsageFetchError(
                        f"{where}: the usage API answered 200 with a body that is not JSON "
                        f"({response.headers.get('content-type', 'no content type')})"
                    ) from None
                if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                    raise UsageFetchError(
                        f"{where}: the usage API answered 200 but not with a page of buckets "
                        '({"object": "page", "data": [...]})'
                    )
                return page
            if status in (401, 403):
                raise UsageFetchError(
                    f"{where}: refused with {status}: needs an admin key with usage read "
                    f"(api.usage.read); the API said: {_error_text(response, key)} Create one under "
                    "Organization settings > Admin keys and set OPENAI_ADMIN_KEY(S)."
                )
            last = f"{status} {_error_text(response, key)}"
            if status == 429:
                asked = retry_after_seconds(response.headers.get("retry-after"))
                wait = asked if asked is not None else BACKOFF_S[min(attempt - 1, 4)]
                if wait > max_wait_s:
                    raise UsageFetchError(
                        f"{where}: rate limited (429) with Retry-After {wait:.0f}s, over the "
                        f"{max_wait_s:.0f}s this fetch waits; fetch again later"
                    )
            elif status >= 500:
                wait = BACKOFF_S[min(attempt - 1, len(BACKOFF_S) - 1)]
            else:
                raise UsageFetchError(f"{where}: the usage API answered {last}")
        if attempt == max_attempts:
            break
        if budget.clock() + wait > budget.deadline:
            raise UsageFetchError(
                f"{where}: out of time: the fetch's deadline would pass before the next "
                f"attempt (last answer: {last})"
            )
        budget.retries += 1
        budget.waited_s += wait
        budget.sleep(wait)
    raise UsageFetchError(f"{where}: gave up after {max_attempts} attempts; last answer: {last}")


def fetch_organisation(
    client: httpx.Client,
    base_url: str,
    key: str,
    index: int,
    query: UsageQuery,
    *,
    of: int = 1,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    max_attempts: int = MAX_ATTEMPTS,
    max_wait_s: float = MAX_RETRY_AFTER_S,
    deadline_s: float = DEADLINE_S,
) -> OrgUsage:
    """Every page of one organisation's usage for ``query``, following ``next_page``."""
    url = normalise_base_url(base_url) + COMPLETIONS_PATH
    budget = _Budget(clock() + deadline_s, clock, sleep)
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    seen: set[str] = set()
    for number in range(1, MAX_PAGES + 1):
        where = f"fetch-usage: {_org(index, of)} (admin key {index}), page {number}"
        page = _get_page(
            client,
            url,
            key,
            query.params(cursor),
            where,
            budget,
            max_attempts=max_attempts,
            max_wait_s=max_wait_s,
        )
        pages.append(page)
        if not page.get("has_more"):
            return OrgUsage(index, tuple(pages), budget.requests, budget.retries, budget.waited_s)
        cursor = page.get("next_page")
        if not isinstance(cursor, str) or not cursor or cursor in seen:
            raise UsageFetchError(
                f"{where}: has_more is true but next_page is {json.dumps(cursor)}: "
                "the pages cannot be followed"
            )
        seen.add(cursor)
    raise UsageFetchError(
        f"fetch-usage: {_org(index, of)}: more than {MAX_PAGES} pages; fetch fewer days at a time"
    )


@dataclass(frozen=True)
class FetchedUsage:
    """Where the pages went: one folder per organisation, relative to the writer's root."""

    orgs: tuple[OrgUsage, ...]
    folders: tuple[str, ...]
    files: tuple[str, ...] = field(default=())  # pages, then their .sha256 files


def fetch_usage(
    keys: Sequence[str],
    base_url: str,
    query: UsageQuery,
    *,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[OrgUsage, ...]:
    """Every organisation's pages (nothing written); raises UsageFetchError."""
    if not keys:
        raise UsageFetchError(
            "fetch-usage: no admin key: set OPENAI_ADMIN_KEY (or OPENAI_ADMIN_KEYS, comma-separated, "
            "one per organisation) in the environment"
        )
    keys = [AdminKey(k) for k in keys]  # a traceback through here shows no key
    own = client is None
    http = client or httpx.Client(timeout=REQUEST_TIMEOUT, follow_redirects=False)
    try:
        return tuple(
            fetch_organisation(
                http, base_url, key, n, query, of=len(keys), sleep=sleep, clock=clock
            )
            for n, key in enumerate(keys, 1)
        )
    finally:
        if own:
            http.close()


def org_folder(root: str, index: int) -> str:
    return f"{root}/org-{index}" if root else f"org-{index}"


def write_pages(writer: EvidenceWriter, root: str, orgs: Sequence[OrgUsage]) -> FetchedUsage:
    """The pages as JSON under ``root``/org-<n>/page-<nnn>.json, each with its ``.sha256``.

    Refuses a folder that already holds pages: stale pages of another fetch would be read as
    the same usage twice.
    """
    folders = []
    pages: list[str] = []
    sums: list[str] = []
    for org in orgs:
        folder = org_folder(root, org.index)
        existing = writer.path(folder)
        if existing.is_dir() and any(existing.glob("*.json")):
            raise UsageFetchError(
                f"fetch-usage: {existing} already holds pages from an earlier fetch; "
                "choose an empty folder (--out)"
            )
        folders.append(folder)
        for number, page in enumerate(org.pages, 1):
            rel = f"{folder}/page-{number:03d}.json"
            path = writer.write_json(rel, page)
            writer.write_text(f"{rel}.sha256", f"{sha256_file(path)}  {path.name}\n")
            pages.append(rel)
            sums.append(f"{rel}.sha256")
    return FetchedUsage(tuple(orgs), tuple(folders), tuple(pages + sums))


def describe(org: OrgUsage, folder: Path | str) -> str:
    retries = f", {org.retries} retried ({org.waited_s:.0f}s waited)" if org.retries else ""
    return (
        f"organisation {org.index}: {len(org.pages)} page(s), {org.buckets} bucket(s), "
        f"{org.results} result(s){retries} -> {folder}"
    )


USAGE_DIR = "telemetry-audit"


@dataclass(frozen=True)
class RunUsage:
    """A run's fetched usage, relative to the audit folder."""

    root: str  # telemetry-audit/usage-<run-id>
    folders: tuple[str, ...]  # one per organisation: the export paths
    pages: tuple[str, ...]
    lines: tuple[str, ...]  # one line per organisation, for the terminal


def usage_relpath(run_id: str) -> str:
    return f"{USAGE_DIR}/usage-{run_id}"


def fetch_usage_for_run(
    writer: EvidenceWriter,
    run_id: str,
    keys: Sequence[str],
    base_url: str,
    now: datetime,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> RunUsage:
    """The suite's fetch: the run's days (yesterday and today, UTC) into a fresh
    ``telemetry-audit/usage-<run-id>/`` of the audit folder."""
    from cron_dryrun.windows import daily_windows

    windows = daily_windows(now)
    query = UsageQuery(windows[0].start, windows[-1].end)
    orgs = fetch_usage(keys, base_url, query, sleep=sleep)
    # the run id is unique per run, so the folder is never one another run wrote
    root = usage_relpath(run_id)
    written = write_pages(writer, root, orgs)
    pages = tuple(f for f in written.files if f.endswith(".json"))
    lines = tuple(
        f"openai usage (api): {describe(org, folder)}"
        for org, folder in zip(orgs, written.folders, strict=True)
    )
    return RunUsage(root, written.folders, pages, lines)
