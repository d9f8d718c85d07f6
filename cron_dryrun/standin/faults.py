"""The stand-in's faults (issue 6): each makes it wrong in one way the runbook exists to catch.

A fault is a ``Fault`` value: a handful of switches the cron app, the stand-in
OpenAI API and the stack read. ``none`` has every switch off. Parity judges only
admin-mode rows (standard rows carry no ids), so faults that must fail parity
act on the ADMIN key, and faults that must not (window-wide, stale-update) act
on a STANDARD key's rows only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

FlagsField = Literal["boolean", "missing", "string"]
Rounding = Literal["ceil", "floor"]


@dataclass(frozen=True)
class Fault:
    """What one fault changes; the defaults are the healthy stand-in."""

    name: str
    breaks: str  # one line: what goes wrong, in the runbook's words
    # -- authentication
    accept_any_token: bool = False
    accept_missing_header: bool = False
    ingest_before_401: bool = False
    # -- transport
    reject_post: bool = False
    html_500: bool = False
    slow: bool = False
    throttle_first: bool = False
    # -- the flag and the body
    windows_flag_on: bool = True
    flags_field: FlagsField = "boolean"
    extra_simulated_key_count: int | None = None
    # -- admin key (parity must see these)
    shift_one_admin_row_days: int = 0
    output_drift: float = 0.0
    drift_rounding: Rounding = "floor"
    skip_admin_yesterday: bool = False
    admin_refusal_status: int | None = None  # what the OpenAI stand-in answers the admin key
    every_key_refusal_status: int | None = None  # ... and every key, when set
    simulate_on_scope_missing: bool = False
    dated_model: bool = False
    rename_models: bool = False  # '.' -> '-' in admin model names, as the real app stores them
    null_breakdown: bool = False  # admin rows' breakdown columns NULL (older provider shape)
    # -- standard key (parity cannot see these)
    wide_standard_row: bool = False
    rewrite_stale_standard_row: bool = False
    # -- database
    plain_inserts: bool = False  # and the stack drops usage_admin_bucket_idx
    # -- the telemetry's counters (issue 27)
    manual_fallback: bool = False  # writes reported under manualFallback*, as the app's default
    inserts_counted_as_updates: bool = False  # every write counted as an update, in both totals
    counter_offsets: tuple[tuple[str, int], ...] = ()  # (counter, added to what is reported)
    counter_values: tuple[tuple[str, int], ...] = ()  # (counter, reported instead)


def _f(name: str, breaks: str, **switches: object) -> Fault:
    return Fault(name=name, breaks=breaks, **switches)  # type: ignore[arg-type]


FAULTS: Mapping[str, Fault] = {
    f.name: f
    for f in (
        _f("none", "nothing: the stand-in behaves"),
        _f("auth-open", "accepts any bearer token", accept_any_token=True),
        _f("auth-no-header", "accepts a request without Authorization", accept_missing_header=True),
        _f(
            "auth-401-writes",
            "ingests first, then answers 401 to a wrong token",
            ingest_before_401=True,
        ),
        _f(
            "no-post",
            "answers POST with 405 and an empty body (the app's GET-only route)",
            reject_post=True,
        ),
        _f(
            "flag-off",
            "ingests with ENABLE_DAILY_USAGE_WINDOWS off: one unaligned [T-24h, T) window per key, flag false",
            windows_flag_on=False,
        ),
        _f(
            "flag-missing",
            "omits the `flags` object (as the app's current source does)",
            flags_field="missing",
        ),
        _f(
            "flag-string",
            'reports "enableDailyUsageWindows": "true", a string',
            flags_field="string",
        ),
        _f(
            "window-shift",
            "writes one of yesterday's admin rows a day earlier",
            shift_one_admin_row_days=-1,
        ),
        _f(
            "window-wide",
            "writes one extra standard-key row with a two-day window",
            wide_standard_row=True,
        ),
        _f(
            "stale-update",
            "also rewrites a standard-key row from five days ago, same values",
            rewrite_stale_standard_row=True,
        ),
        _f(
            "simulated",
            "the admin key lacks scope and simulation is on: invented usage, simulatedKeys 1, SCOPE_MISSING 2",
            admin_refusal_status=403,
            simulate_on_scope_missing=True,
        ),
        _f("simulated-count", "adds telemetry.simulatedKeyCount: 2", extra_simulated_key_count=2),
        _f("token-drift", "admin output tokens +3 %", output_drift=0.03, drift_rounding="ceil"),
        _f("small-drift", "admin output tokens +1 % (inside the 2 % tolerance)", output_drift=0.01),
        _f("drop-window", "skips yesterday's window for the admin key", skip_admin_yesterday=True),
        _f(
            "duplicate-rerun",
            "plain INSERTs into a table without usage_admin_bucket_idx: a rerun duplicates rows",
            plain_inserts=True,
        ),
        _f(
            "provider-error",
            "the provider fails for the admin key: PROVIDER_ERROR 1 and UNKNOWN 1 (a failed key counts twice), failedKeys 1, still 200",
            admin_refusal_status=500,
        ),
        _f(
            "all-keys-fail",
            "the provider fails for every key: failedKeys = keys, UNKNOWN per key, still 200",
            every_key_refusal_status=500,
        ),
        _f(
            "pricing-fallback",
            "the provider reports a dated model name: PRICING_FALLBACK 1",
            dated_model=True,
        ),
        _f(
            "renamed-model",
            "stores admin model names with '-' for '.' (gpt-4.1-mini as gpt-4-1-mini), as the app does",
            rename_models=True,
        ),
        _f(
            "null-breakdown",
            "leaves the admin rows' breakdown columns NULL (the provider's older response shape)",
            null_breakdown=True,
        ),
        _f("html-500", "answers 500 with an HTML body", html_500=True),
        _f(
            "slow",
            "answers only after the stack's slow_delay_s (above the client timeout)",
            slow=True,
        ),
        _f(
            "throttle",
            "answers the first authorised request 429 with Retry-After: 1",
            throttle_first=True,
        ),
        _f(
            "manual-fallback",
            "reports its writes under manualFallback* (the app's default, unique-index upsert "
            "off): honest counters, a warning only",
            manual_fallback=True,
        ),
        _f(
            "stored-updated-swapped",
            "counts every row it inserts as updated: a first run reports storedEvents 0, "
            "updatedEvents = the rows it inserted",
            inserts_counted_as_updates=True,
        ),
        _f(
            "warning-count-off",
            "reports warningCount one above the issues in issuesByCode",
            counter_offsets=(("warningCount", 1),),
        ),
        _f(
            "fallback-keys-zero",
            "writes through the manual fallback and reports manualFallbackKeys 0",
            manual_fallback=True,
            counter_values=(("manualFallbackKeys", 0),),
        ),
        _f(
            "fallback-windows-off",
            "writes through the manual fallback and reports manualFallbackWindows two above "
            "the (key, window) pairs it wrote",
            manual_fallback=True,
            counter_offsets=(("manualFallbackWindows", 2),),
        ),
        _f(
            "processed-users-off",
            "reports telemetry.processedUsers one above processed",
            counter_offsets=(("processedUsers", 1),),
        ),
        _f(
            "write-modes-off",
            "reports constraintInserts one above storedEvents (no manual-fallback inserts)",
            counter_offsets=(("constraintInserts", 1),),
        ),
        _f(
            "negative-count",
            "reports constraintUpdates -1",
            counter_values=(("constraintUpdates", -1),),
        ),
    )
}


def get_fault(name: str) -> Fault:
    """The fault called ``name``; a ValueError listing the known ones otherwise."""
    try:
        return FAULTS[name]
    except KeyError:
        raise ValueError(f"unknown fault {name!r}; known faults: {', '.join(FAULTS)}") from None
