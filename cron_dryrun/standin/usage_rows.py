"""usage_events rows as the stand-in cron builds them from provider answers. Pure.

Used by the cron (from the stand-in API's JSON) and by the seed (historical rows),
so both write the same shape: window_start at the bucket start, window_end at its
end, naive datetimes holding UTC, ``timestamp`` = window_start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cron_dryrun.parity.formats import METRIC_COLUMNS
from cron_dryrun.standin.usage_truth import Usage, from_epoch
from cron_dryrun.windows import naive_utc

# USD per million tokens: (uncached input, cached input, output). Undated names only;
# a dated name is priced by its base model and reported as PRICING_FALLBACK, as the app does.
PRICES_PER_MTOK: Mapping[str, tuple[Decimal, Decimal, Decimal]] = {
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.075"), Decimal("0.60")),
    "gpt-4.1": (Decimal("2.00"), Decimal("0.50"), Decimal("8.00")),
    "gpt-4.1-mini": (Decimal("0.40"), Decimal("0.10"), Decimal("1.60")),
    "gpt-4.1-nano": (Decimal("0.10"), Decimal("0.025"), Decimal("0.40")),
    "o4-mini": (Decimal("1.10"), Decimal("0.275"), Decimal("4.40")),
}
_FALLBACK_PRICE = PRICES_PER_MTOK["gpt-4o-mini"]
_DATE_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")
_MICRO = Decimal("0.000001")  # cost_estimate is numeric(10, 6)

# The token columns after num_model_requests, each named like its export column
# (the parity diff's list, so the stand-in writes exactly what the diff compares).
TOKEN_COLUMNS = tuple(
    name for name, column in METRIC_COLUMNS if name == column and name != "num_model_requests"
)
COLUMNS = (
    "key_id",
    "model",
    "tokens_in",
    "tokens_out",
    "cost_estimate",
    "timestamp",
    "window_start",
    "window_end",
    "project_id",
    "openai_user_id",
    "openai_api_key_id",
    "service_tier",
    "batch",
    "num_model_requests",
    *TOKEN_COLUMNS,
)


def price(model: str) -> tuple[tuple[Decimal, Decimal, Decimal], bool]:
    """The model's prices and whether they are a fallback (unknown or dated name)."""
    if model in PRICES_PER_MTOK:
        return PRICES_PER_MTOK[model], False
    return PRICES_PER_MTOK.get(_DATE_SUFFIX.sub("", model), _FALLBACK_PRICE), True


def cost_estimate(model: str, usage: Usage, *, discounted: bool) -> Decimal:
    (p_in, p_cached, p_out), _ = price(model)
    cost = (
        (usage.input_tokens - usage.input_cached_tokens) * p_in
        + usage.input_cached_tokens * p_cached
        + usage.output_tokens * p_out
    ) / Decimal(1_000_000)
    if discounted:  # batch and flex run at half price
        cost /= 2
    return cost.quantize(_MICRO, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class EventRow:
    """One usage_events row; ``params`` gives the values in ``COLUMNS`` order."""

    key_id: int
    model: str
    window_start: datetime  # naive UTC
    window_end: datetime  # naive UTC
    usage: Usage
    project_id: str | None = None
    openai_user_id: str | None = None
    openai_api_key_id: str | None = None
    service_tier: str | None = None
    batch: bool | None = None
    breakdown_recorded: bool = True  # False: the columns the older response lacks stay NULL

    @property
    def cost(self) -> Decimal:
        discounted = bool(self.batch) or self.service_tier == "flex"
        return cost_estimate(self.model, self.usage, discounted=discounted)

    def params(self) -> tuple[Any, ...]:
        m = self.usage.export_metrics()
        return (
            self.key_id,
            self.model,
            self.usage.input_tokens,
            self.usage.output_tokens,
            self.cost,
            self.window_start,
            self.window_start,
            self.window_end,
            self.project_id,
            self.openai_user_id,
            self.openai_api_key_id,
            self.service_tier,
            self.batch,
            self.usage.num_model_requests,
            *(
                m[name] if self.breakdown_recorded or name in OLDER_SHAPE else None
                for name in TOKEN_COLUMNS
            ),
        )

    def shifted(self, days: int) -> EventRow:
        """The same row moved ``days`` days (the window-shift fault)."""
        delta = timedelta(days=days)
        return replace(
            self, window_start=self.window_start + delta, window_end=self.window_end + delta
        )


# what an admin-API result of the provider's older documented shape carries (contract.md 9)
OLDER_SHAPE = frozenset(
    ("input_cached_tokens", "input_audio_tokens", "output_audio_tokens", "num_model_requests")
)


def usage_from_result(result: Mapping[str, Any]) -> Usage:
    """The metrics of one admin-API result (missing counts are 0)."""
    return Usage(
        num_model_requests=int(result.get("num_model_requests") or 0),
        input_tokens=int(result.get("input_tokens") or 0),
        output_tokens=int(result.get("output_tokens") or 0),
        input_cached_tokens=int(result.get("input_cached_tokens") or 0),
        input_audio_tokens=int(result.get("input_audio_tokens") or 0),
        output_audio_tokens=int(result.get("output_audio_tokens") or 0),
    )


def admin_rows(key_id: int, buckets: Iterable[Mapping[str, Any]]) -> list[EventRow]:
    """Rows from admin-API buckets: one per result, window = the bucket's own edges."""
    rows = []
    for bucket in buckets:
        start = naive_utc(from_epoch(int(bucket["start_time"])))
        end = naive_utc(from_epoch(int(bucket["end_time"])))
        for result in bucket.get("results") or []:
            usage = usage_from_result(result)
            if usage.is_empty:
                continue
            rows.append(
                EventRow(
                    key_id=key_id,
                    model=str(result.get("model") or "unknown"),
                    window_start=start,
                    window_end=end,
                    usage=usage,
                    project_id=result.get("project_id"),
                    openai_user_id=result.get("user_id"),
                    openai_api_key_id=result.get("api_key_id"),
                    service_tier=result.get("service_tier"),
                    batch=result.get("batch"),
                )
            )
    return rows


def standard_rows(
    key_id: int, start: datetime, end: datetime, entries: Iterable[Mapping[str, Any]]
) -> list[EventRow]:
    """Rows from legacy /v1/usage entries in [start, end): one per model, no ids (NULL)."""
    lo, hi = start.timestamp(), end.timestamp()
    per_model: dict[str, Usage] = {}
    for entry in entries:
        if not lo <= int(entry["aggregation_timestamp"]) < hi:
            continue
        model = str(entry.get("snapshot_id") or "unknown")
        usage = Usage(
            num_model_requests=int(entry.get("n_requests") or 0),
            input_tokens=int(entry.get("n_context_tokens_total") or 0),
            output_tokens=int(entry.get("n_generated_tokens_total") or 0),
            input_cached_tokens=int(entry.get("n_cached_context_tokens_total") or 0),
        )
        per_model[model] = per_model.get(model, Usage()) + usage
    return [
        EventRow(
            key_id=key_id,
            model=model,
            window_start=naive_utc(start),
            window_end=naive_utc(end),
            usage=usage,
        )
        for model, usage in sorted(per_model.items())
        if not usage.is_empty
    ]
