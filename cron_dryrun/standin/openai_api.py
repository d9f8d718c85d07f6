"""Stand-in OpenAI usage API (plain ASGI), serving the stand-in's usage truth.

- ``GET /v1/organization/usage/completions``: the admin API of contract.md section 5
  (``start_time``, ``end_time``, ``bucket_width`` 1d/1h/1m, ``limit``, opaque ``page``
  cursor, ``group_by``), for keys in admin mode.
- ``GET /v1/usage?date=YYYY-MM-DD``: a minimal legacy endpoint for keys in standard
  mode: per-minute, per-model entries with no project, user or API key ids.

Bearer auth maps each stand-in key to one organisation's truth. On demand the first
requests answer 429 with ``Retry-After``, the next ones a transient 5xx, and a key can be
refused (403 missing scope, 500 server error) to drive the cron's failure paths.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cron_dryrun.errors import CronDryrunError
from cron_dryrun.standin._asgi import (
    Receive,
    Scope,
    Send,
    handled_outside_http,
    header,
    query,
    respond_json,
)
from cron_dryrun.standin.usage_truth import (
    BUCKET_WIDTHS,
    GROUP_FIELDS,
    UsageOrg,
    epoch,
    group_usage,
)

COMPLETIONS_PATH = "/v1/organization/usage/completions"
LEGACY_PATH = "/v1/usage"
# The real API's defaults and maxima of `limit` (buckets per page) per bucket width.
DEFAULT_LIMIT = {"1d": 7, "1h": 24, "1m": 60}
MAX_LIMIT = {"1d": 31, "1h": 168, "1m": 1440}


@dataclass(frozen=True)
class ApiAccount:
    """What a stand-in key sees: its organisation's usage, and whether it may read the admin API."""

    org: UsageOrg
    admin: bool
    refusal_status: int | None = None  # answer every request of this key with this status


class BadRequest(CronDryrunError, ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def _error(
    message: str, kind: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def encode_cursor(next_start: int) -> str:
    return (
        base64.urlsafe_b64encode(json.dumps({"v": 1, "next": next_start}).encode())
        .decode()
        .rstrip("=")
    )


def decode_cursor(cursor: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if (
            not isinstance(data, dict)
            or data.get("v") != 1
            or not isinstance(data.get("next"), int)
        ):
            raise ValueError(cursor)
        return int(data["next"])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("Invalid page cursor", "page") from None


def _int_param(params: Mapping[str, list[str]], name: str, default: int | None = None) -> int:
    values = params.get(name)
    if not values or values[-1] == "":
        if default is None:
            raise BadRequest(f"Missing required parameter: '{name}'.", name)
        return default
    try:
        return int(values[-1])
    except ValueError:
        raise BadRequest(f"Invalid integer for '{name}': {values[-1]!r}", name) from None


def _group_by(params: Mapping[str, list[str]]) -> list[str]:
    """group_by as a comma list, repeated, or `group_by[]=` (clients send all three)."""
    fields: list[str] = []
    for raw in params.get("group_by", []) + params.get("group_by[]", []):
        fields.extend(f.strip() for f in raw.split(",") if f.strip())
    unknown = [f for f in fields if f not in GROUP_FIELDS]
    if unknown:
        raise BadRequest(
            f"Invalid group_by value(s): {', '.join(unknown)}; allowed: {', '.join(GROUP_FIELDS)}",
            "group_by",
        )
    return fields


def completions_page(org: UsageOrg, params: Mapping[str, list[str]]) -> dict[str, Any]:
    """One page of the admin completions endpoint for ``org`` (pure; raises BadRequest)."""
    width_name = (params.get("bucket_width") or ["1d"])[-1]
    if width_name not in BUCKET_WIDTHS:
        raise BadRequest(
            f"Invalid bucket_width {width_name!r}; allowed: 1m, 1h, 1d", "bucket_width"
        )
    width = BUCKET_WIDTHS[width_name]
    limit = _int_param(params, "limit", DEFAULT_LIMIT[width_name])
    if not 1 <= limit <= MAX_LIMIT[width_name]:
        raise BadRequest(
            f"limit must be between 1 and {MAX_LIMIT[width_name]} for bucket_width {width_name}",
            "limit",
        )
    start = _int_param(params, "start_time")
    end = _int_param(params, "end_time", start + limit * width)
    if start < 0 or end <= start:
        raise BadRequest("end_time must be after start_time, both Unix seconds", "end_time")
    group_by = _group_by(params)
    page_start = start
    if params.get("page") and params["page"][-1]:
        page_start = decode_cursor(params["page"][-1])
        if not start <= page_start < end or (page_start - start) % width:
            raise BadRequest("The page cursor does not belong to this query", "page")
    page_end = min(end, page_start + limit * width)
    data = []
    for bucket in org.buckets(page_start, page_end, width):
        results = []
        for ids, usage in group_usage(bucket.usage, group_by):
            if usage.is_empty:
                continue
            results.append(
                {
                    "object": "organization.usage.completions.result",
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "input_cached_tokens": usage.input_cached_tokens,
                    "input_audio_tokens": usage.input_audio_tokens,
                    "output_audio_tokens": usage.output_audio_tokens,
                    "num_model_requests": usage.num_model_requests,
                    **ids,
                }
            )
        data.append(
            {
                "object": "bucket",
                "start_time": bucket.start,
                "end_time": bucket.end,
                "results": results,
            }
        )
    has_more = page_end < end
    return {
        "object": "page",
        "data": data,
        "has_more": has_more,
        "next_page": encode_cursor(page_end) if has_more else None,
    }


def legacy_usage(org: UsageOrg, params: Mapping[str, list[str]]) -> dict[str, Any]:
    """The legacy per-day usage list: per-minute, per-model entries, no ids (pure)."""
    raw = (params.get("date") or [""])[-1]
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise BadRequest(f"Invalid date {raw!r}; expected YYYY-MM-DD", "date") from None
    start = epoch(datetime(day.year, day.month, day.day, tzinfo=UTC))
    end = epoch(datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1))
    per_minute: dict[tuple[int, str], list[int]] = {}
    for minute, stream, usage in org.minute_events(start, end):
        sums = per_minute.setdefault((minute, stream.model), [0, 0, 0, 0])
        sums[0] += usage.num_model_requests
        sums[1] += usage.input_tokens
        sums[2] += usage.output_tokens
        sums[3] += usage.input_cached_tokens
    data = [
        {
            "aggregation_timestamp": minute,
            "n_requests": sums[0],
            "operation": "completion",
            "snapshot_id": model,
            "n_context_tokens_total": sums[1],
            "n_generated_tokens_total": sums[2],
            "n_cached_context_tokens_total": sums[3],
        }
        for (minute, model), sums in sorted(per_minute.items())
    ]
    return {
        "object": "list",
        "data": data,
        "ft_data": [],
        "dalle_api_data": [],
        "whisper_api_data": [],
    }


class OpenAIUsageApi:
    """The ASGI app. ``accounts`` maps each accepted bearer key to what it sees."""

    def __init__(
        self,
        accounts: Mapping[str, ApiAccount],
        *,
        throttle_requests: int = 0,
        retry_after: str = "1",
        failing_requests: int = 0,
        failing_status: int = 503,
    ) -> None:
        self.accounts = dict(accounts)
        self.retry_after = retry_after
        self._throttle_left = throttle_requests
        self._failing_left = failing_requests  # transient server errors, after the 429s
        self.failing_status = failing_status
        self._lock = threading.Lock()  # counters may be read from test threads
        self.requests_served = 0

    def _take_throttle(self) -> bool:
        with self._lock:
            self.requests_served += 1
            if self._throttle_left > 0:
                self._throttle_left -= 1
                return True
            return False

    def _take_failure(self) -> bool:
        with self._lock:
            if self._failing_left > 0:
                self._failing_left -= 1
                return True
            return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await handled_outside_http(scope, receive, send):
            return
        path = scope["path"]
        if path not in (COMPLETIONS_PATH, LEGACY_PATH):
            await respond_json(
                send, 404, _error(f"Unknown request URL: GET {path}.", "invalid_request_error")
            )
            return
        if scope["method"] != "GET":
            await respond_json(
                send,
                405,
                _error("Method not allowed.", "invalid_request_error"),
                headers=[("allow", "GET")],
            )
            return
        auth = header(scope, "authorization") or ""
        account = self.accounts.get(auth[7:].strip()) if auth.startswith("Bearer ") else None
        if account is None:
            await respond_json(
                send,
                401,
                _error("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
            )
            return
        if self._take_throttle():
            await respond_json(
                send,
                429,
                _error("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
                headers=[
                    ("retry-after", self.retry_after),
                    ("x-ratelimit-remaining-requests", "0"),
                ],
            )
            return
        refusal = account.refusal_status
        if refusal is None and self._take_failure():
            refusal = self.failing_status
        if path == COMPLETIONS_PATH and not account.admin:
            refusal = 403  # a standard key has no api.usage.read scope
        if refusal == 403:
            await respond_json(
                send,
                403,
                _error(
                    "You have insufficient permissions for this operation. Missing scopes: api.usage.read.",
                    "invalid_request_error",
                    "insufficient_permissions",
                ),
            )
            return
        if refusal is not None:
            await respond_json(
                send,
                refusal,
                _error("The server had an error while processing your request.", "server_error"),
            )
            return
        try:
            params = query(scope)
            page = (
                completions_page(account.org, params)
                if path == COMPLETIONS_PATH
                else legacy_usage(account.org, params)
            )
        except BadRequest as exc:
            await respond_json(
                send, 400, _error(str(exc), "invalid_request_error", param=exc.param)
            )
            return
        await respond_json(send, 200, page)
