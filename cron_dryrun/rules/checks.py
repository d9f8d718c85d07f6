"""What counts as a pass, for each runbook step: pure functions on recorded data.

Each ``judge_*`` returns ``None`` for a pass or the failure message an operator
reads. The acceptance tests are the thin place where fixtures meet these rules;
tests/test_checks.py asserts every message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cron_dryrun.bounds import JsonTooDeep, word_excerpt
from cron_dryrun.exchange.record import DbObservation, UsageRow
from cron_dryrun.redaction import (
    Redactor,
    redacted_excerpt,
    request_secrets,
    whole_or_described,
)
from cron_dryrun.target.vercel import protection_block
from cron_dryrun.windows import day_start, expected_windows_processed, in_scope, iso

if TYPE_CHECKING:
    from cron_dryrun.target.client import Exchange, Transcript

BODY_EXCERPT = 300
WINDOW_COLUMNS = ("window_start", "window_end")
MAX_LISTED_ROWS = 20


def describe_answer(t: Transcript) -> str:
    """Status, content type and the start of the body: what a failure message must show."""
    if t.status is None:
        return f"no answer ({t.error})"
    # redacted in full, then cut: a secret the cut would halve is gone before the cut; the
    # cut stays off a redaction marker and goes back to a word boundary
    redact = Redactor(request_secrets(t.request_headers, t.secrets)).redact
    clean = redact(t.body_text()).strip()
    kept, cut = redacted_excerpt(clean, BODY_EXCERPT, lambda text: text)
    if cut:
        excerpt = word_excerpt(clean, len(kept))
    else:
        excerpt = word_excerpt(clean, BODY_EXCERPT, more=t.body_truncated)
    excerpt = excerpt or "(empty body)"
    return f"status {t.status} {t.reason}, content type {t.content_type}, body: {excerpt}"


# -- the main exchange ----------------------------------------------------------------------------


def exchange_problem(exchange: Exchange) -> str | None:
    """Why the main exchange cannot be judged; None when it is a 200 with a JSON object."""
    final = exchange.final
    method = final.method
    if final.status is None:
        return f"{method} {final.url} failed: {final.error}"
    blocked = protection_block(final)
    if blocked:
        return blocked
    if final.status == 405:
        return (
            f"the endpoint refused the method {method} (405 {final.reason}); the app's handler may "
            "export GET only: rerun with --cron-method GET (CRON_METHOD=GET), or add a "
            f"{method} handler to the app"
        )
    if final.status == 429:
        note = exchange.note or "throttled"
        return f"{note}; {describe_answer(final)}"
    if final.status == 401:
        return (
            "the cron answered 401 Unauthorized to the secret: CRON_SECRET is missing or wrong "
            f"for this target; resolve before scheduling ({describe_answer(final)})"
        )
    if final.status == 503:
        return f"the cron answered 503: its server-side CRON_SECRET is unset ({describe_answer(final)})"
    if 300 <= final.status < 400:
        location = final.header("location") or "(no Location)"
        return f"the cron answered a {final.status} redirect to {location}; redirects are not followed ({describe_answer(final)})"
    if final.status != 200:
        return f"expected 200 OK with a JSON body, got {describe_answer(final)}"
    if final.error:
        return f"the answer could not be read whole: {final.error}; {describe_answer(final)}"
    try:
        body = final.json_body()
    except JsonTooDeep as exc:
        return f"the JSON body was refused: {exc}; {describe_answer(final)}"
    except (ValueError, UnicodeDecodeError):
        return f"expected a JSON body, got {describe_answer(final)}"
    if not isinstance(body, dict):
        return f"expected a JSON object, got {type(body).__name__}: {describe_answer(final)}"
    return None


def judge_success_body(body: Mapping[str, Any], schema_errors: Iterable[str]) -> str | None:
    """The 200 body validates against schemas/cron-response.schema.json and says success."""
    errors = list(schema_errors)
    if errors:
        listed = "; ".join(errors[:5])
        return f"the 200 body does not match schemas/cron-response.schema.json: {listed}"
    if body.get("success") is not True:
        return f"expected success true in the 200 body, found success {json.dumps(body.get('success'))}"
    return None


# -- auth negatives -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthCase:
    """A request the cron must refuse (401), or accept when ``accepted`` is True."""

    name: str
    authorization: str | None  # None: no Authorization header at all
    accepted: bool = False

    def __repr__(self) -> str:
        # handed to pytest (parametrize, -l locals, --debug's trace): the scheme, never the token
        shown = self.authorization
        if shown is not None and shown.strip().lower() not in ("bearer", "basic"):
            shown = Redactor.mask_auth_value(shown)
        return f"AuthCase(name={self.name!r}, authorization={shown!r}, accepted={self.accepted!r})"


def _flip(ch: str) -> str:
    return "b" if ch == "a" else "a"


def auth_cases(secret: str) -> list[AuthCase]:
    """The runbook's 401 smoke test, widened to what a sloppy comparison would let through."""
    s = secret.strip()
    cases = [
        AuthCase("no Authorization header", None),
        AuthCase("another scheme (Basic)", "Basic " + s),
        # HTTP strips trailing whitespace from field values (and httpx refuses to send it),
        # so an empty token reaches the app as the bare scheme.
        AuthCase("empty bearer token", "Bearer"),
        AuthCase("token 'undefined'", "Bearer undefined"),
        AuthCase("token 'null'", "Bearer null"),
        AuthCase("wrong token of the same length", "Bearer " + "x" * len(s)),
        AuthCase("shorter token (secret minus last character)", "Bearer " + s[:-1]),
        AuthCase("longer token (secret plus one character)", "Bearer " + s + "x"),
        AuthCase("near miss: last character changed", "Bearer " + s[:-1] + _flip(s[-1])),
        AuthCase("near miss: first character changed", "Bearer " + _flip(s[0]) + s[1:]),
        AuthCase("near miss: first half of the secret", "Bearer " + s[: max(1, len(s) // 2)]),
        AuthCase("near miss: scheme in lower case", "bearer " + s),
        AuthCase("near miss: secret without scheme", s),
    ]
    if s.swapcase() != s:
        cases.append(AuthCase("near miss: secret with case swapped", "Bearer " + s.swapcase()))
    return cases


PADDED_SECRET_CASE_NAME = "secret padded with spaces (the app trims the token)"


def padded_secret_case(secret: str) -> AuthCase:
    # Only inner padding survives the wire: trailing spaces are stripped as HTTP whitespace.
    return AuthCase(PADDED_SECRET_CASE_NAME, f"Bearer    {secret.strip()}", accepted=True)


def judge_auth_case(case: AuthCase, t: Transcript) -> str | None:
    blocked = protection_block(t)
    if blocked:
        # the edge's 401 says nothing about the app's auth: never a pass
        return f"{case.name}: not judged: {blocked}"
    if case.accepted:
        if t.status == 200:
            return None
        return f"{case.name}: expected 200 (accepted), got {describe_answer(t)}"
    if t.status != 401:
        return f"{case.name}: expected 401 Unauthorized, got {describe_answer(t)}"
    try:
        body = t.json_body()
    except (ValueError, UnicodeDecodeError):
        return f"{case.name}: expected a JSON error body with the 401, got {describe_answer(t)}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return f'{case.name}: expected a JSON body like {{"error": "Unauthorized"}} with the 401, got {describe_answer(t)}'
    return None


def judge_rejections_wrote_nothing(changed: Iterable[UsageRow]) -> str | None:
    rows = list(changed)
    if not rows:
        return None
    listed = "; ".join(r.describe() for r in rows[:MAX_LISTED_ROWS])
    return (
        f"{len(rows)} usage_events row(s) changed while the cron was answering 401s: "
        f"a refused request must not start ingestion: {listed}"
    )


# -- flag state -----------------------------------------------------------------------------------


def judge_flag(body: Mapping[str, Any]) -> str | None:
    flags = body.get("flags")
    if flags is None:
        return (
            "flags.enableDailyUsageWindows is missing: the response has no `flags` object "
            "(the app's current source emits none); the runbook requires the JSON boolean true"
        )
    if not isinstance(flags, dict):
        return f"flags.enableDailyUsageWindows is missing: `flags` is {json.dumps(flags)}, not an object"
    if "enableDailyUsageWindows" not in flags:
        return "flags.enableDailyUsageWindows is missing from the `flags` object " + json.dumps(
            flags
        )
    value = flags["enableDailyUsageWindows"]
    if value is True:
        return None
    kind = _json_kind(value)  # said only where the value alone does not show it
    shown = f"{json.dumps(value)} ({kind})" if kind else json.dumps(value)
    return f"flags.enableDailyUsageWindows is {shown}; expected the JSON boolean true"


def _json_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return None


# -- telemetry ------------------------------------------------------------------------------------


@dataclass
class TelemetryJudgement:
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def message(self) -> str | None:
        return "; ".join(self.failures) if self.failures else None


def _number(telemetry: Mapping[str, Any], name: str) -> int | None:
    value = telemetry.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None  # 1e400 parses as inf
    return int(value)


SHOWN_VALUE_CHARS = 80


def reported_writes(telemetry: Mapping[str, Any]) -> tuple[int, str | None]:
    """storedEvents + updatedEvents, and a failure message when either is not a whole,
    non-negative number (absent counts as 0): a hostile or broken answer is a failed
    check, never a crash."""
    total = 0
    problems = []
    for name in ("storedEvents", "updatedEvents"):
        value = telemetry.get(name)
        if value is None:
            continue
        number = _number(telemetry, name)
        if number is None or number < 0 or number != value:
            problems.append(
                f"telemetry.{name} is {whole_or_described(value, SHOWN_VALUE_CHARS)}, expected a whole number of events"
            )
            continue
        total += number
    return total, "; ".join(problems) or None


def judge_telemetry(
    body: Mapping[str, Any],
    active_openai_keys: int,
    allowed_issue_codes: Iterable[str],
    previous_manual_fallback_windows: int | None = None,
) -> TelemetryJudgement:
    j = TelemetryJudgement()
    telemetry = body.get("telemetry")
    if not isinstance(telemetry, dict):
        j.failures.append("the response has no `telemetry` object")
        return j
    expected = expected_windows_processed(active_openai_keys)
    windows = _number(telemetry, "windowsProcessed")
    if windows != expected:
        j.failures.append(
            f"windowsProcessed is {json.dumps(telemetry.get('windowsProcessed'))}, expected {expected} "
            f"(2 daily windows x {active_openai_keys} OpenAI keys in provider_keys)"
        )
    if _number(body, "errors") != 0:
        j.failures.append(f"errors is {json.dumps(body.get('errors'))}, expected 0")
    if _number(telemetry, "failedKeys") != 0:
        j.failures.append(
            f"telemetry.failedKeys is {json.dumps(telemetry.get('failedKeys'))}, expected 0"
        )
    issues = telemetry.get("issuesByCode")
    if not isinstance(issues, dict):
        j.failures.append(f"telemetry.issuesByCode is {json.dumps(issues)}, expected an object")
        issues = {}
    allowed = set(allowed_issue_codes)
    blocking = {code: n for code, n in issues.items() if n and code not in allowed}
    tolerated = {code: n for code, n in issues.items() if n and code in allowed}
    if blocking:
        listed = ", ".join(f"{code}: {n}" for code, n in sorted(blocking.items()))
        j.failures.append(
            f"blocking issues by code: {listed} (each needs a follow-up; "
            "--allow-issue-code CODE tolerates one)"
        )
    if tolerated:
        listed = ", ".join(f"{code}: {n}" for code, n in sorted(tolerated.items()))
        j.warnings.append(f"issues recorded as warnings: {listed}")
    mf_windows = _number(telemetry, "manualFallbackWindows") or 0
    if mf_windows > 0:
        j.warnings.append(
            f"manualFallbackWindows is {mf_windows}: the unique-index upsert is off, writes went "
            "through the manual fallback"
        )
        if previous_manual_fallback_windows:
            j.warnings.append(
                "manualFallbackWindows > 0 on two consecutive runs: open an ingestion ticket"
            )
    return j


# -- window scoping -------------------------------------------------------------------------------


def judge_window_scoping(
    run_at: datetime, db: DbObservation, reported_writes: int | None = None
) -> str | None:
    """Every row the run wrote is one UTC day starting yesterday or today; nothing else changed.

    ``reported_writes`` (storedEvents + updatedEvents) guards against judging the wrong
    database: a run that says it wrote rows, with none changed here, proves nothing.
    """
    if reported_writes and not db.changed_rows:
        return (
            f"the cron reports {reported_writes} stored/updated events but no usage_events row "
            "changed in this database: is DATABASE_URL the database the cron writes to?"
        )
    offending: list[tuple[UsageRow, str]] = []
    for row in db.changed_rows:
        if row.window_start is None or row.window_end is None:
            offending.append((row, "NULL window"))
        elif not in_scope(run_at, row.window_start, row.window_end):
            offending.append((row, "outside the run's windows"))
    if not offending:
        return None
    today = day_start(run_at)
    listed = "\n".join(f"  {row.describe()}: {why}" for row, why in offending[:MAX_LISTED_ROWS])
    more = (
        f"\n  ... and {len(offending) - MAX_LISTED_ROWS} more"
        if len(offending) > MAX_LISTED_ROWS
        else ""
    )
    yesterday = iso(today - timedelta(days=1))
    first, why = offending[0]
    # the first line stands alone (the verdict table shows only it): it names one row
    return (
        f"{len(offending)} usage_events row(s) written by the run at {iso(run_at)} fall outside "
        f"the expected daily windows (one UTC day starting {yesterday} or {iso(today)}), "
        f"the first {first.describe()} ({why})\nall of them:\n{listed}{more}"
    )


# -- simulated keys -------------------------------------------------------------------------------


def find_simulated(value: Any, path: str = "$") -> list[tuple[str, Any]]:
    """Every field named like simulated* (any case, any depth) with a non-zero or true value."""
    found: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        for key, child in value.items():
            child_path = f"{path}.{key}"
            if str(key).lower().startswith("simulated") and _is_set(child):
                found.append((child_path, child))
            found.extend(find_simulated(child, child_path))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(find_simulated(child, f"{path}[{index}]"))
    return found


def _is_set(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false")
    if isinstance(value, list | dict):
        return len(value) > 0
    return True


def judge_no_simulated_keys(body: Mapping[str, Any]) -> str | None:
    hits = find_simulated(body)
    if not hits:
        return None
    listed = ", ".join(f"{path} = {json.dumps(value)}" for path, value in hits)
    return f"simulated usage reported (the runbook allows none): {listed}"


# -- idempotent rerun -----------------------------------------------------------------------------


def judge_rerun(
    body: Mapping[str, Any],
    count_before: int,
    count_after: int,
    duplicate_keys: int,
) -> str | None:
    problems = []
    raw_telemetry = body.get("telemetry")
    telemetry: dict[str, Any] = raw_telemetry if isinstance(raw_telemetry, dict) else {}
    stored = _number(telemetry, "storedEvents")
    updated = _number(telemetry, "updatedEvents")
    failed = _number(telemetry, "failedKeys")
    keys = _number(telemetry, "processedKeys")
    if failed and keys and failed >= keys and not stored and not updated:
        # every key failed at the provider: a rerun that writes nothing proves nothing
        return (
            f"the rerun ingested nothing (failedKeys {failed} of {keys}), so idempotence cannot "
            "be shown; fix what makes every key fail (see telemetry), then run again"
        )
    if stored != 0:
        problems.append(
            f"storedEvents is {json.dumps(telemetry.get('storedEvents'))}, expected 0 on a rerun"
        )
    if not updated or updated <= 0:
        problems.append(
            f"updatedEvents is {json.dumps(telemetry.get('updatedEvents'))}, expected > 0 on a rerun"
        )
    if count_after != count_before:
        problems.append(
            f"usage_events went from {count_before} to {count_after} rows, expected no change"
        )
    if duplicate_keys:
        problems.append(
            f"{duplicate_keys} unique-index key(s) of usage_admin_bucket_idx are held by more than one row"
        )
    if not problems:
        return None
    return "a rerun inside the same windows is not idempotent: " + "; ".join(problems)


# -- prerequisites --------------------------------------------------------------------------------


def judge_target_scheme(cron_url: str, loopback: bool) -> str | None:
    if loopback or cron_url.lower().startswith("https://"):
        return None
    return f"CRON_URL {cron_url} is not https: the bearer secret would cross the network in clear; use https://"


def judge_exports_present(paths: Iterable[str]) -> str | None:
    """The parity check needs at least one readable export file (a folder counts by its files)."""
    from pathlib import Path

    listed = [Path(p) for p in paths]
    if not listed:
        return "no OpenAI usage export given: pass --openai-export PATH or set OPENAI_EXPORT"
    missing = [str(p) for p in listed if not p.exists()]
    if missing:
        return (
            f"OpenAI usage export not found: {', '.join(missing)} (--openai-export / OPENAI_EXPORT)"
        )
    empty = [str(p) for p in listed if p.is_dir() and not any(f.is_file() for f in p.rglob("*"))]
    if empty:
        return f"OpenAI usage export folder holds no files: {', '.join(empty)} (--openai-export / OPENAI_EXPORT)"
    return None


def judge_window_columns(columns: Iterable[str]) -> str | None:
    present = set(columns)
    missing = [c for c in WINDOW_COLUMNS if c not in present]
    if not present:
        return "table usage_events does not exist in DATABASE_URL's database (the app's SCHEMA_MISSING condition)"
    if missing:
        return (
            f"usage_events lacks column(s) {', '.join(missing)} (the app's SCHEMA_MISSING "
            "condition): run the app's migrations first"
        )
    return None
