"""Telemetry that tells the truth (issue 27): each counter the cron reports, checked against
the others and against the rows the exchange wrote. Pure: the telemetry check reads, these judge.

The rules are the app's own arithmetic (contract.md section 2, "How the counters are
computed": route.ts lines 52-111, usage-fetcher.ts lines 1366-1401 and 1488-1502 at
dd42bd93), so an honest run always passes them. Each ``judge_*`` returns ``None`` or one
message naming the counter, the value reported and the value observed; a counter that is
absent or not a count leaves the rules that need it to the count rule and the schema.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cron_dryrun.exchange.record import UsageRow
from cron_dryrun.redaction import whole_or_described

TOP_LEVEL_COUNTERS = ("processed", "successful", "errors", "warningCount")
TELEMETRY_COUNTERS = (
    "processedUsers",
    "processedKeys",
    "simulatedKeys",
    "failedKeys",
    "storedEvents",
    "updatedEvents",
    "windowsProcessed",
    "constraintInserts",
    "constraintUpdates",
    "manualFallbackInserts",
    "manualFallbackUpdates",
    "manualFallbackWindows",
    "manualFallbackKeys",
)
# issue codes that never stop a key's rows (a dated model name is still ingested)
NON_FAILING_CODES = frozenset({"PRICING_FALLBACK"})
MAX_LISTED_IDS = 5
MAX_VALUE_CHARS = 80


def counter_label(name: str) -> str:
    """How a message names a counter: telemetry's with their object, as the body nests them."""
    return f"telemetry.{name}" if name in TELEMETRY_COUNTERS else name


@dataclass(frozen=True)
class Counters:
    """The body's counters that are counts (whole numbers >= 0), by name, and what is not."""

    values: Mapping[str, int]
    issues: Mapping[str, int] | None  # None: issuesByCode absent, not an object or not counts
    problems: tuple[str, ...]

    def get(self, name: str) -> int | None:
        return self.values.get(name)


def _as_count(value: Any) -> int | None:
    """``value`` as a count: an int (or a float without fraction, as JSON allows) >= 0."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and value >= 0:
        return value
    return None


def _shown(value: Any) -> str:
    return whole_or_described(value, MAX_VALUE_CHARS)  # never cut: a cut secret escapes redaction


def read_counters(body: Mapping[str, Any]) -> Counters:
    """Every counter of the success body; a present one that is not a count is a problem."""
    raw_telemetry = body.get("telemetry")
    telemetry: Mapping[str, Any] = raw_telemetry if isinstance(raw_telemetry, dict) else {}
    values: dict[str, int] = {}
    problems: list[str] = []
    sources = [(name, body) for name in TOP_LEVEL_COUNTERS]
    sources += [(name, telemetry) for name in TELEMETRY_COUNTERS]
    for name, source in sources:
        if name not in source:
            continue
        count = _as_count(source[name])
        if count is None:
            problems.append(
                f"{counter_label(name)} is {_shown(source[name])}, expected a whole number >= 0"
            )
        else:
            values[name] = count
    issues: dict[str, int] | None = None
    raw_issues = telemetry.get("issuesByCode")
    if isinstance(raw_issues, dict):
        issues = {}
        for code, n in raw_issues.items():
            count = _as_count(n)
            if count is None:
                problems.append(
                    f"telemetry.issuesByCode.{code} is {_shown(n)}, expected a whole number >= 0"
                )
                issues = None
                break
            issues[str(code)] = count
    return Counters(values, issues, tuple(problems))


def judge_counters_are_counts(counters: Counters) -> str | None:
    """Every counter present is a whole number >= 0 (the response schema's minimum, kept)."""
    return "; ".join(counters.problems) or None


def _listed_issues(issues: Mapping[str, int]) -> str:
    listed = ", ".join(f"{code}: {n}" for code, n in sorted(issues.items()) if n)
    return f" ({listed})" if listed else ""


def judge_warning_count(counters: Counters) -> str | None:
    """warningCount is the number of issues, and issuesByCode counts the same issues by code."""
    warnings, issues = counters.get("warningCount"), counters.issues
    if warnings is None or issues is None:
        return None
    total = sum(issues.values())
    if warnings == total:
        return None
    return (
        f"warningCount is {warnings}, but the issues in telemetry.issuesByCode add up to "
        f"{total}{_listed_issues(issues)}: the app counts every issue once in each"
    )


def judge_user_counts(counters: Counters) -> str | None:
    """successful + errors = processed = processedUsers: every user read counts once."""
    processed = counters.get("processed")
    successful, errors = counters.get("successful"), counters.get("errors")
    users = counters.get("processedUsers")
    problems = []
    if (
        processed is not None
        and successful is not None
        and errors is not None
        and successful + errors != processed
    ):
        problems.append(
            f"processed is {processed}, but successful + errors is {successful} + {errors} "
            f"= {successful + errors}: every user processed counts once, as successful or "
            "as an error"
        )
    if processed is not None and users is not None and users != processed:
        problems.append(
            f"telemetry.processedUsers is {users}, but processed is {processed}: both count "
            "the users the run read"
        )
    return "; ".join(problems) or None


def judge_write_modes(counters: Counters) -> str | None:
    """Every upsert counts once, in one mode: stored = constraint + manual-fallback inserts,
    updated = constraint + manual-fallback updates."""
    problems = []
    for total, kind in (("storedEvents", "Inserts"), ("updatedEvents", "Updates")):
        reported = counters.get(total)
        constraint = counters.get(f"constraint{kind}")
        manual = counters.get(f"manualFallback{kind}")
        if reported is None or constraint is None or manual is None:
            continue
        if constraint + manual != reported:
            problems.append(
                f"telemetry.{total} is {reported}, but constraint{kind} + manualFallback{kind} "
                f"is {constraint} + {manual} = {constraint + manual}: every write counts once, "
                "in one mode"
            )
    return "; ".join(problems) or None


def judge_manual_fallback(counters: Counters) -> str | None:
    """manualFallbackKeys and manualFallbackWindows are 0 exactly when no write went through
    the manual fallback; keys <= windows <= those writes; keys <= processedKeys."""
    inserts = counters.get("manualFallbackInserts")
    updates = counters.get("manualFallbackUpdates")
    keys = counters.get("manualFallbackKeys")
    windows = counters.get("manualFallbackWindows")
    if inserts is None or updates is None:
        return None
    writes = inserts + updates
    sum_text = f"manualFallbackInserts + manualFallbackUpdates is {inserts} + {updates} = {writes}"
    problems = []
    for name, value, unit in (
        ("manualFallbackKeys", keys, "key"),
        ("manualFallbackWindows", windows, "window"),
    ):
        if value is None:
            continue
        if writes and not value:
            problems.append(
                f"telemetry.{name} is 0, but {sum_text}: writes through the manual fallback "
                f"come from at least one {unit}"
            )
        elif value and not writes:
            problems.append(
                f"telemetry.{name} is {value}, but {sum_text}: no write went through the "
                "manual fallback"
            )
    if keys is not None and windows is not None and keys > windows:
        problems.append(
            f"telemetry.manualFallbackKeys is {keys}, but manualFallbackWindows is {windows}: "
            "each such key wrote at least one window"
        )
    if windows is not None and writes and windows > writes:
        problems.append(
            f"telemetry.manualFallbackWindows is {windows}, but {sum_text}: each such window "
            "had at least one write"
        )
    processed_keys = counters.get("processedKeys")
    if keys is not None and processed_keys is not None and keys > processed_keys:
        problems.append(
            f"telemetry.manualFallbackKeys is {keys}, but processedKeys is {processed_keys}"
        )
    return "; ".join(problems) or None


def judge_counters_agree(counters: Counters) -> list[str]:
    """Every rule on the body alone, in the README's order; the failures' messages."""
    rules = (
        judge_counters_are_counts,
        judge_warning_count,
        judge_user_counts,
        judge_write_modes,
        judge_manual_fallback,
    )
    return [message for rule in rules if (message := rule(counters))]


# -- against the rows the exchange wrote -----------------------------------------------------------


@dataclass(frozen=True)
class WrittenRows:
    """The usage_events rows one exchange wrote (xmin past the watermark), split by whether
    their id existed before it: ids come from a sequence, so a row whose id is above the
    largest id read with the watermark was inserted, any other was updated."""

    inserted: tuple[UsageRow, ...]
    updated: tuple[UsageRow, ...]

    @classmethod
    def split(cls, changed: Iterable[UsageRow], max_id_before: int) -> WrittenRows:
        rows = sorted(changed, key=lambda r: r.id)
        return cls(
            tuple(r for r in rows if r.id > max_id_before),
            tuple(r for r in rows if r.id <= max_id_before),
        )

    @property
    def all(self) -> tuple[UsageRow, ...]:
        return (*self.updated, *self.inserted)


def _ids(rows: Sequence[UsageRow]) -> str:
    if not rows:
        return ""
    shown = ", ".join(str(r.id) for r in rows[:MAX_LISTED_IDS])
    more = f", ... {len(rows) - MAX_LISTED_IDS} more" if len(rows) > MAX_LISTED_IDS else ""
    return f" (ids {shown}{more})"


def judge_writes_counted(counters: Counters, written: WrittenRows, exchange: str) -> str | None:
    """storedEvents = the rows the exchange inserted; updatedEvents >= the rows it updated.

    The app counts each upsert once, as inserted (a new row) or updated (it hit a row): so
    the inserts are exactly the new rows. An upsert that hits a row inserted earlier in the
    same run also counts as updated (standard keys' legacy entries share one row per model
    and day), so updatedEvents may exceed the existing rows rewritten, never fall short of
    them (a rewrite with the same values is still an update, and still a new xmin).
    """
    problems = []
    stored = counters.get("storedEvents")
    if stored is not None and stored != len(written.inserted):
        problems.append(
            f"{exchange}: telemetry.storedEvents is {stored}, but the exchange inserted "
            f"{len(written.inserted)} new usage_events row(s){_ids(written.inserted)}"
        )
    updated = counters.get("updatedEvents")
    if updated is not None and updated < len(written.updated):
        problems.append(
            f"{exchange}: telemetry.updatedEvents is {updated}, but the exchange updated "
            f"{len(written.updated)} existing usage_events row(s){_ids(written.updated)}"
        )
    return "; ".join(problems) or None


def judge_fallback_within_writes(
    counters: Counters, written: WrittenRows, exchange: str
) -> str | None:
    """The manual fallback's keys and (key, window) pairs are among those the exchange wrote.

    Not "<= windowsProcessed": the app counts a window's writes before a later window of the
    same key fails (that key's windows are then not processed), and with the flag off one
    fetched window holds buckets of two days.
    """
    rows = written.all
    pairs = {(r.key_id, r.window_start) for r in rows}
    key_ids = {r.key_id for r in rows}
    problems = []
    windows = counters.get("manualFallbackWindows")
    if windows is not None and windows > len(pairs):
        problems.append(
            f"{exchange}: telemetry.manualFallbackWindows is {windows}, but the exchange wrote "
            f"rows for {len(pairs)} (key, window) pair(s)"
        )
    keys = counters.get("manualFallbackKeys")
    if keys is not None and keys > len(key_ids):
        problems.append(
            f"{exchange}: telemetry.manualFallbackKeys is {keys}, but the exchange wrote rows "
            f"for {len(key_ids)} key(s)"
        )
    return "; ".join(problems) or None


# -- per key ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenAIKey:
    """A provider_keys row with provider 'openai', as the listing names it."""

    id: int
    usage_mode: str

    def describe(self) -> str:
        return f"key {self.id} ({self.usage_mode})"


def _day(value: datetime | None) -> str:
    if value is None:
        return "NULL"
    text = value.isoformat()
    return text[:10] if text.endswith("T00:00:00") else text


def windows_by_key(
    keys: Sequence[OpenAIKey],
    written: Iterable[UsageRow],
    expected_starts: Sequence[datetime],
    issues: Mapping[str, int] | None,
    failed_keys: int | None,
) -> tuple[dict[str, list[str]], list[str]]:
    """Per OpenAI key, the window starts the run wrote rows for; and a note per expected
    window a key has no row in. "no usage reported" when nothing the cron said explains it
    (a key that silently fetched nothing shows up); the cron's issues otherwise. Never a
    failure: a key may simply have had no usage that day (parity judges admin keys' usage).

    ``expected_starts`` are naive UTC, as the rows store them.
    """
    rows = list(written)
    failing = {c: n for c, n in (issues or {}).items() if n and c not in NON_FAILING_CODES}
    listing: dict[str, list[str]] = {}
    notes: list[str] = []
    for key in keys:
        starts = sorted(
            {r.window_start for r in rows if r.key_id == key.id},
            key=lambda s: (s is None, s or datetime.min),
        )
        listing[key.describe()] = [_day(s) for s in starts]
        elsewhere = [_day(s) for s in starts if s not in expected_starts]
        for expected in expected_starts:
            if expected in starts:
                continue
            if elsewhere:
                notes.append(
                    f"{key.describe()}: no rows for the window starting {_day(expected)}; "
                    f"its rows are for {', '.join(elsewhere)} (see window scoping)"
                )
            elif failing or failed_keys:
                why = f"the cron reports failedKeys {failed_keys or 0}{_listed_issues(failing)}"
                notes.append(
                    f"{key.describe()}: no rows for the window starting {_day(expected)} "
                    f"({why}, which may explain it)"
                )
            else:
                notes.append(
                    f"{key.describe()}: no usage reported for the window starting "
                    f"{_day(expected)} (no row written, no issue code explains it)"
                )
    return listing, notes
