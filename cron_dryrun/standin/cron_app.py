"""Stand-in for the app's ``/api/cron/daily-usage`` (plain ASGI), per contract.md sections 1-3.

Auth (503 / 401 / constant-time compare on trimmed values), GET/HEAD/POST run the
ingestion, OPTIONS 204, 500 JSON on an unhandled failure. Ingestion reads every
``provider='openai'`` key, fetches each window from the stand-in OpenAI API over HTTP
(admin keys: the completions endpoint grouped by ids; standard keys: legacy
``/v1/usage``) and upserts through ``usage_admin_bucket_idx``. The telemetry counts
what was really written. A ``Fault`` changes one behaviour at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import math
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from cron_dryrun.standin._asgi import (
    Receive,
    Scope,
    Send,
    handled_outside_http,
    header,
    respond,
    respond_json,
)
from cron_dryrun.standin.faults import Fault, get_fault
from cron_dryrun.standin.provider_client import ProviderError, ScopeMissing, UsageApiClient
from cron_dryrun.standin.seed import decode_key
from cron_dryrun.standin.store import insert_rows, upsert_rows
from cron_dryrun.standin.usage_rows import EventRow, admin_rows, price, standard_rows
from cron_dryrun.standin.usage_truth import Usage
from cron_dryrun.windows import (
    Window,
    as_utc,
    daily_windows,
    day_start,
    naive_utc,
    unaligned_window,
)

CRON_PATH = "/api/cron/daily-usage"
_REFUSED_TOKENS = ("undefined", "null")  # what an unset env variable turns into in JS
_log = logging.getLogger("cron_dryrun.standin.cron")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso_ms(value: datetime) -> str:
    """Like JavaScript's toISOString(): milliseconds and a Z."""
    return as_utc(value).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def authorize(server_secret: str | None, authorization: str | None) -> int:
    """The app's auth table: 200, 401 or 503 (contract.md section 1)."""
    secret = (server_secret or "").strip()
    if not secret or secret in _REFUSED_TOKENS:
        return 503
    if authorization is None or not authorization.startswith("Bearer "):
        return 401
    token = authorization[len("Bearer ") :].strip()
    if not token or token in _REFUSED_TOKENS:
        return 401
    # Digests have the same length whatever the inputs, so compare_digest runs in
    # constant time and leaks neither the secret's length nor a matching prefix.
    same = hmac.compare_digest(
        hashlib.sha256(token.encode()).digest(), hashlib.sha256(secret.encode()).digest()
    )
    return 200 if same else 401


@dataclass
class Telemetry:
    """The run's counters; ``as_json`` gives the app's field names."""

    processed_users: int = 0
    processed_keys: int = 0
    simulated_keys: int = 0
    failed_keys: int = 0
    stored_events: int = 0
    updated_events: int = 0
    windows_processed: int = 0
    constraint_inserts: int = 0
    constraint_updates: int = 0
    manual_fallback_inserts: int = 0
    manual_fallback_updates: int = 0
    # (key id, window start) written through the manual fallback, as the app keys its set
    manual_fallback_pairs: set[tuple[int, datetime | None]] = field(default_factory=set)
    issues: Counter[str] = field(default_factory=Counter)

    def wrote(
        self,
        inserted: int,
        updated: int,
        pairs: Iterable[tuple[int, datetime | None]] = (),
        *,
        manual_fallback: bool = False,
    ) -> None:
        """Count one write batch once, in one mode, as usage-fetcher.ts does."""
        self.stored_events += inserted
        self.updated_events += updated
        if not manual_fallback:
            self.constraint_inserts += inserted
            self.constraint_updates += updated
            return
        self.manual_fallback_inserts += inserted
        self.manual_fallback_updates += updated
        if inserted or updated:
            self.manual_fallback_pairs.update(pairs)

    def as_json(self) -> dict[str, Any]:
        return {
            "processedUsers": self.processed_users,
            "processedKeys": self.processed_keys,
            "simulatedKeys": self.simulated_keys,
            "failedKeys": self.failed_keys,
            "storedEvents": self.stored_events,
            "updatedEvents": self.updated_events,
            "windowsProcessed": self.windows_processed,
            "constraintInserts": self.constraint_inserts,
            "constraintUpdates": self.constraint_updates,
            "manualFallbackInserts": self.manual_fallback_inserts,
            "manualFallbackUpdates": self.manual_fallback_updates,
            "manualFallbackWindows": len(self.manual_fallback_pairs),
            "manualFallbackKeys": len({key for key, _ in self.manual_fallback_pairs}),
            "issuesByCode": {code: n for code, n in sorted(self.issues.items()) if n},
        }


def tell_lies(body: dict[str, Any], fault: Fault) -> None:
    """The telemetry faults (issue 27): counters that no longer say what the run did."""
    telemetry = body["telemetry"]
    for name, delta in fault.counter_offsets:
        target = body if name in body else telemetry
        target[name] += delta
    for name, value in fault.counter_values:
        target = body if name in body else telemetry
        target[name] = value


@dataclass(frozen=True)
class _Key:
    id: int
    user_id: str
    encrypted_key: str
    usage_mode: str

    @property
    def is_admin(self) -> bool:
        return self.usage_mode == "admin"


def _drift(rows: list[EventRow], fault: Fault) -> list[EventRow]:
    """Output tokens off by fault.output_drift; ceil / floor keep the drift above / below its size."""
    if not fault.output_drift:
        return rows
    rnd = math.ceil if fault.drift_rounding == "ceil" else math.floor
    return [
        replace(
            r,
            usage=replace(
                r.usage, output_tokens=int(rnd(r.usage.output_tokens * (1 + fault.output_drift)))
            ),
        )
        for r in rows
    ]


def invented_rows(key_id: int, window: Window) -> list[EventRow]:
    """What the app's simulation writes for a key it may not read: plausible, made-up usage.

    Seeded by key and window so a rerun rewrites the same rows instead of adding more.
    """
    rng = random.Random(f"simulated/{key_id}/{window.start.isoformat()}")
    requests = rng.randint(5, 50)
    usage = Usage(requests, requests * rng.randint(200, 900), requests * rng.randint(50, 300))
    return [EventRow(key_id, "gpt-4o-mini", naive_utc(window.start), naive_utc(window.end), usage)]


class DailyUsageIngestion:
    """One cron run: read keys, fetch windows, write rows, count. Synchronous (runs in a thread)."""

    def __init__(
        self,
        database_dsn: str,
        openai_url: str,
        fault: Fault,
        now: datetime,
        *,
        http_timeout_s: float,
    ) -> None:
        self.database_dsn = database_dsn
        self.openai_url = openai_url
        self.fault = fault
        self.now = as_utc(now)
        self.http_timeout_s = http_timeout_s
        self.telemetry = Telemetry()
        self._fallback_models: set[str] = set()

    def windows(self) -> list[Window]:
        return (
            daily_windows(self.now) if self.fault.windows_flag_on else [unaligned_window(self.now)]
        )

    def run(self) -> Telemetry:
        with (
            psycopg.connect(
                self.database_dsn, connect_timeout=10, options="-c statement_timeout=30000"
            ) as conn,
            UsageApiClient(self.openai_url, timeout_s=self.http_timeout_s) as api,
        ):
            keys = [
                _Key(int(r[0]), str(r[1]), str(r[2]), str(r[3]))
                for r in conn.execute(
                    "SELECT id, user_id, encrypted_key, usage_mode FROM provider_keys"
                    " WHERE provider = 'openai' ORDER BY id"
                ).fetchall()
            ]
            conn.commit()
            self.telemetry.processed_users = len({k.user_id for k in keys})
            self.telemetry.processed_keys = len(keys)
            for key in keys:
                with (
                    conn.transaction()
                ):  # one transaction per key: a failing key keeps the others' writes
                    self._ingest_key(conn, api, key)
            standard = [k for k in keys if not k.is_admin]
            if standard and self.fault.wide_standard_row:
                with conn.transaction():
                    self._write_wide_row(conn, standard[0])
            if standard and self.fault.rewrite_stale_standard_row:
                with conn.transaction():
                    self._rewrite_stale_row(conn, standard[0])
        self.telemetry.issues["PRICING_FALLBACK"] += len(self._fallback_models)
        return self.telemetry

    def _fetch(self, api: UsageApiClient, key: _Key, secret: str, window: Window) -> list[EventRow]:
        if key.is_admin:
            rows = admin_rows(key.id, api.completions(secret, window.start, window.end))
            if not window.is_utc_day:
                # Flag off: record the window asked for, [T-24h, T) to the microsecond, as the
                # standard rows do. Each run then writes new rows instead of updating the
                # day's row (contract.md section 3), whatever second it runs in.
                start, end = naive_utc(window.start), naive_utc(window.end)
                rows = [replace(r, window_start=start, window_end=end) for r in rows]
            return rows
        return standard_rows(
            key.id, window.start, window.end, api.legacy_entries(secret, window.start, window.end)
        )

    def _ingest_key(self, conn: psycopg.Connection, api: UsageApiClient, key: _Key) -> None:
        t, fault = self.telemetry, self.fault
        try:
            secret = decode_key(key.encrypted_key)
        except ValueError as exc:
            _log.warning("key %s: cannot decode: %s", key.id, exc)
            t.failed_keys += 1
            t.issues["CONFIGURATION_ERROR"] += 1
            return
        windows = self.windows()
        if key.is_admin and fault.skip_admin_yesterday and len(windows) > 1:
            windows = windows[1:]
        simulated = False
        for window in windows:
            try:
                rows = self._fetch(api, key, secret, window)
            except ScopeMissing as exc:
                t.issues[exc.code] += 1
                if not fault.simulate_on_scope_missing:
                    t.failed_keys += 1
                    return
                rows, simulated = invented_rows(key.id, window), True
            except ProviderError as exc:
                _log.warning("key %s: %s", key.id, exc)
                t.failed_keys += 1
                # the app records the failure twice: once in the window without a code
                # (UNKNOWN), once for the key with the error's code ("counts twice")
                t.issues["UNKNOWN"] += 1
                t.issues[exc.code] += 1
                return
            if key.is_admin:
                rows = _drift(rows, fault)
                if fault.rename_models:
                    rows = [replace(r, model=r.model.replace(".", "-")) for r in rows]
                if fault.null_breakdown:
                    rows = [replace(r, breakdown_recorded=False) for r in rows]
                if (
                    fault.shift_one_admin_row_days
                    and rows
                    and window.start == day_start(self.now) - timedelta(days=1)
                ):
                    rows = [rows[0].shifted(fault.shift_one_admin_row_days), *rows[1:]]
            self._fallback_models.update(r.model for r in rows if price(r.model)[1])
            self._write(conn, rows)
            t.windows_processed += 1
        t.simulated_keys += int(simulated)

    def _write(self, conn: psycopg.Connection, rows: list[EventRow]) -> None:
        fault = self.fault
        if fault.plain_inserts:
            inserted, updated = insert_rows(conn, rows), 0
        else:
            inserted, updated = upsert_rows(conn, rows)
        if fault.inserts_counted_as_updates:
            inserted, updated = 0, inserted + updated
        pairs = {(r.key_id, r.window_start) for r in rows}
        self.telemetry.wrote(inserted, updated, pairs, manual_fallback=fault.manual_fallback)

    def _write_wide_row(self, conn: psycopg.Connection, key: _Key) -> None:
        """window-wide: one row spanning yesterday and today."""
        start = day_start(self.now) - timedelta(days=1)
        usage = Usage(num_model_requests=1, input_tokens=100, output_tokens=10)
        self._write(
            conn,
            [
                EventRow(
                    key.id,
                    "gpt-4.1-mini",
                    naive_utc(start),
                    naive_utc(start + timedelta(days=2)),
                    usage,
                )
            ],
        )

    def _rewrite_stale_row(self, conn: psycopg.Connection, key: _Key) -> None:
        """stale-update: rewrite (same values) the newest row at least five days old."""
        cutoff = naive_utc(day_start(self.now) - timedelta(days=5))
        found = conn.execute(
            "SELECT id, window_start FROM usage_events WHERE key_id = %s AND window_start <= %s"
            " ORDER BY window_start DESC, id LIMIT 1",
            (key.id, cutoff),
        ).fetchone()
        if found is not None:
            conn.execute("UPDATE usage_events SET tokens_in = tokens_in WHERE id = %s", (found[0],))
            pairs = {(key.id, found[1])}
            self.telemetry.wrote(0, 1, pairs, manual_fallback=self.fault.manual_fallback)


class DailyUsageCronApp:
    """The ASGI app. ``secret`` None, blank, "undefined" or "null" makes every call 503."""

    def __init__(
        self,
        *,
        database_dsn: str,
        openai_url: str,
        secret: str | None,
        fault: Fault | str = "none",
        clock: Clock = utc_now,
        slow_delay_s: float = 5.0,
        http_timeout_s: float = 10.0,
    ) -> None:
        self.database_dsn = database_dsn
        self.openai_url = openai_url
        self.secret = secret
        self.fault = get_fault(fault) if isinstance(fault, str) else fault
        self.clock = clock
        self.slow_delay_s = slow_delay_s
        self.http_timeout_s = http_timeout_s
        self._throttled = False
        self._lock = threading.Lock()

    def ingest(self) -> dict[str, Any]:
        """Run the ingestion once and build the success body (synchronous)."""
        now = self.clock()
        telemetry = DailyUsageIngestion(
            self.database_dsn, self.openai_url, self.fault, now, http_timeout_s=self.http_timeout_s
        ).run()
        t = telemetry.as_json()
        if self.fault.extra_simulated_key_count is not None:
            t["simulatedKeyCount"] = self.fault.extra_simulated_key_count
        # route.ts: warningCount is the number of issues, as issuesByCode counts them
        warnings = sum(telemetry.issues.values())
        body: dict[str, Any] = {
            "success": True,
            "processed": telemetry.processed_users,
            "successful": telemetry.processed_users,
            "errors": 0,
            "warningCount": warnings,
            "timestamp": iso_ms(self.clock()),
            "telemetry": t,
        }
        tell_lies(body, self.fault)
        if self.fault.flags_field == "boolean":
            body["flags"] = {"enableDailyUsageWindows": self.fault.windows_flag_on}
        elif self.fault.flags_field == "string":
            body["flags"] = {"enableDailyUsageWindows": "true"}
        return body

    def _let_through(self, authorization: str | None) -> int:
        """The auth status after the fault's leniency (auth-open, auth-no-header)."""
        status = authorize(self.secret, authorization)
        if (
            status == 401
            and self.fault.accept_any_token
            and authorization
            and authorization.startswith("Bearer ")
        ):
            return 200
        if status == 401 and self.fault.accept_missing_header and authorization is None:
            return 200
        return status

    def _first_authorised(self) -> bool:
        with self._lock:
            first, self._throttled = not self._throttled, True
            return first

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await handled_outside_http(scope, receive, send):
            return
        if scope["path"].rstrip("/") != CRON_PATH:
            await respond_json(send, 404, {"error": "Not Found"})
            return
        method = scope["method"]
        allowed = ("GET", "HEAD") if self.fault.reject_post else ("GET", "HEAD", "POST")
        if method == "OPTIONS":
            await respond(send, 204, headers=[("allow", ", ".join((*allowed, "OPTIONS")))])
            return
        if method not in allowed:
            await respond(send, 405)  # as Next.js answers: empty body, no Allow header
            return
        head = method == "HEAD"
        authorization = header(scope, "authorization")
        status = self._let_through(authorization)
        if status == 503:
            await respond_json(send, 503, {"error": "Service unavailable"}, head=head)
            return
        if status == 401:
            if self.fault.ingest_before_401 and authorization is not None:
                with contextlib.suppress(Exception):  # the fault writes, then refuses regardless
                    await asyncio.to_thread(self.ingest)
            await respond_json(send, 401, {"error": "Unauthorized"}, head=head)
            return
        if self.fault.throttle_first and self._first_authorised():
            await respond_json(
                send, 429, {"error": "Too Many Requests"}, headers=[("retry-after", "1")], head=head
            )
            return
        if self.fault.slow and await _client_left_within(receive, self.slow_delay_s):
            return  # nobody is waiting for the answer any more
        if self.fault.html_500:
            page = b"<!DOCTYPE html><html><head><title>500: Internal Server Error</title></head>"
            page += b"<body><h1>500</h1><p>Internal Server Error.</p></body></html>"
            await respond(send, 500, page, content_type="text/html; charset=utf-8", head=head)
            return
        try:
            body = await asyncio.to_thread(self.ingest)
        except Exception:  # last resort, as the app's route: 500 JSON on any failure
            _log.exception("daily usage fetch failed")
            failure = {
                "error": "Failed to run daily usage fetch",
                "timestamp": iso_ms(self.clock()),
            }
            await respond_json(send, 500, failure, head=head)
            return
        await respond_json(send, 200, body, head=head)


async def _client_left_within(receive: Receive, delay_s: float) -> bool:
    """Wait ``delay_s``, or less if the client disconnects first (it timed out): True if it left.

    Returning on disconnect means a slow answer never outlives its caller, so it
    cannot hold up the server's shutdown; uvicorn's graceful timeout bounds the rest.
    """

    async def disconnected() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # drain the request body

    try:
        await asyncio.wait_for(disconnected(), timeout=delay_s)
    except TimeoutError:
        return False
    return True
