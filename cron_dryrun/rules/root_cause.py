"""Why a NO-GO happened, when several checks fail from one cause. Pure.

With the flag off, five checks fail; with the exchange not made, every check that needs
it fails; with every key failing at the provider, telemetry, parity and the rerun fail.
An operator needs the cause and its fix first, then the failures that follow from it.
``find_root_cause`` names one of these three from what the run recorded; the terminal,
the HTML report, ``gate.json`` and the summary lead with it.

``STEP_ADVICE`` is the README's "when it fails" column, for the terminal.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.target.vercel import BYPASS_ENV, PROTECTION_BLOCKED
from cron_dryrun.windows import in_scope

OPEN_ENDPOINT_FIX = (
    "fix the app's auth check: compare the token after `Bearer ` with CRON_SECRET (constant "
    "time, both trimmed as the app does, no case folding) and answer 401 before any work; "
    "redeploy, then run again. Until then anyone who can reach the URL can run the job"
)
# how many of the accepted requests the cause names before "and N more"
MAX_NAMED_REQUESTS = 3

FLAG_FIX = (
    "set ENABLE_DAILY_USAGE_WINDOWS=true in the staging environment and redeploy, "
    "then run the dry run again"
)

# what each step's failure asks of the operator (README: "The checks", last column)
STEP_ADVICE: dict[str, str] = {
    "prerequisites": "set the named variable; run the app's migrations",
    "auth_smoke": "a 401 to the secret: fix CRON_SECRET before scheduling; 405: see "
    "--cron-method; a 5xx, non-JSON body or timeout: read the status and body in the smoke log",
    "flag_state": "missing `flags`: ship the runbook's `flags` object; false or a string: fix "
    "ENABLE_DAILY_USAGE_WINDOWS and its parsing",
    "telemetry": "the flag is off or a key was skipped; open a follow-up per issue code",
    "window_scoping": "rows outside the daily windows: the flag is off or the window code is "
    "wrong; the listed rows say which",
    "no_simulated_keys": "a key lacks scope and ENABLE_SIMULATED_USAGE=true invented its usage: "
    "fix the key, turn simulation off",
    "idempotent_rerun": "the unique index is missing or the upsert is broken: duplicates would "
    "double totals",
    "parity": "see the parity report: missing in DB, renamed models, unrecorded metrics and "
    "unaligned rows are explained in the message",
}

EXCHANGE_STEPS = (
    "auth_smoke",
    "flag_state",
    "telemetry",
    "window_scoping",
    "no_simulated_keys",
    "idempotent_rerun",
    "parity",
)
FLAG_OFF_STEPS = ("flag_state", "telemetry", "window_scoping", "idempotent_rerun", "parity")
ALL_KEYS_STEPS = ("telemetry", "window_scoping", "idempotent_rerun", "parity")


@dataclass(frozen=True)
class RunSignals:
    """The few facts of a recorded run that point at one cause."""

    exchange_problem: str | None = None
    exchange_status: int | None = None
    flag_value: Any = None  # flags.enableDailyUsageWindows as found; None when absent
    windows_processed: int | None = None
    active_keys: int | None = None
    processed_keys: int | None = None
    failed_keys: int | None = None
    issues_by_code: Mapping[str, int] | None = None
    unaligned_rows_written: int = 0
    # auth negatives (a wrong or missing secret) the cron answered with a 2xx: their names
    accepted_without_secret: tuple[str, ...] = ()


@dataclass(frozen=True)
class RootCause:
    """One cause, its fix, and the failing steps that follow from it."""

    kind: str  # "auth-open", "exchange-missing", "flag-off" or "all-keys-failed"
    cause: str
    fix: str
    consequences: tuple[str, ...]

    def headline(self) -> str:
        return f"root cause: {self.cause}"

    def lines(self) -> list[str]:
        out = [self.headline(), f"fix: {self.fix}"]
        if self.consequences:
            out.append(
                "consequences (these checks fail because of it): " + ", ".join(self.consequences)
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "cause": self.cause,
            "fix": self.fix,
            "consequences": list(self.consequences),
        }


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def accepted_negatives(answers: Iterable[tuple[str, int | None]], prefix: str) -> tuple[str, ...]:
    """The auth negatives (exchange labels starting with ``prefix``) answered with a 2xx."""
    return tuple(
        label.removeprefix(prefix)
        for label, status in answers
        if label.startswith(prefix) and status is not None and 200 <= status < 300
    )


def signals_from_run(
    run: RecordedRun | None, accepted_without_secret: tuple[str, ...] = ()
) -> RunSignals:
    """What ``find_root_cause`` reads, from the session's recorded run (and the auth negatives
    the cron accepted, which are exchanges of their own)."""
    if run is None:
        return RunSignals(accepted_without_secret=accepted_without_secret)
    status = run.exchange.final.status if run.exchange is not None else None
    body = run.body or {}
    flags = body.get("flags")
    raw_telemetry = body.get("telemetry")
    telemetry: dict[str, Any] = raw_telemetry if isinstance(raw_telemetry, dict) else {}
    unaligned = 0
    if run.db is not None:
        for row in run.db.changed_rows:
            if (
                row.window_start is not None
                and row.window_end is not None
                and not in_scope(run.run_at, row.window_start, row.window_end)
            ):
                unaligned += 1
    return RunSignals(
        exchange_problem=run.problem,
        exchange_status=status,
        flag_value=flags.get("enableDailyUsageWindows") if isinstance(flags, dict) else None,
        windows_processed=_int(telemetry.get("windowsProcessed")),
        active_keys=run.active_openai_keys,
        processed_keys=_int(telemetry.get("processedKeys")),
        failed_keys=_int(telemetry.get("failedKeys")),
        issues_by_code=telemetry.get("issuesByCode")
        if isinstance(telemetry.get("issuesByCode"), dict)
        else None,
        unaligned_rows_written=unaligned,
        accepted_without_secret=accepted_without_secret,
    )


def exchange_fix(status: int | None, problem: str | None = None) -> str:
    """What to do when the cron exchange was not made, by what came back."""
    if problem and problem.startswith(PROTECTION_BLOCKED):
        # the edge answered, not the app: CRON_SECRET was never looked at
        return f"set {BYPASS_ENV} (the project's Protection Bypass for Automation secret), then run again"
    if status is None:
        return (
            "check that CRON_URL answers from here; a real run over many users may need a "
            "larger --cron-timeout (CRON_TIMEOUT)"
        )
    if status == 405:
        return "rerun with --cron-method GET (CRON_METHOD=GET), or add a POST handler to the app"
    if status == 401:
        return "fix CRON_SECRET for this target, then run again"
    if status == 503:
        return "set CRON_SECRET in the app's environment and redeploy"
    if status == 429:
        return "wait for the Retry-After the smoke log shows, then run again"
    if status >= 500:
        return (
            "read the app's logs for this request (the answer is in the smoke log), fix, run again"
        )
    return "read the answer in the smoke log; the cron must answer 200 with its JSON body"


def _failing(steps: Iterable[tuple[str, str]], candidates: Sequence[str]) -> tuple[str, ...]:
    bad = {name for name, status in steps if status != "passed"}
    return tuple(s for s in candidates if s in bad)


def find_root_cause(
    signals: RunSignals, steps: Iterable[tuple[str, str]], remote: bool = True
) -> RootCause | None:
    """The one cause behind several failing steps, or None.

    ``steps`` are (step name, status) pairs. Checked in order: the exchange not made, every
    key failing at the provider, the flag off. A cause is named only when a step it
    explains failed. ``remote``: the target is staging (else the local stack, whose flag
    is the stand-in's, not staging's).
    """
    steps = list(steps)
    if signals.accepted_without_secret and _failing(steps, ("auth_smoke",)):
        # the worst finding: named first, whatever else failed
        named = list(signals.accepted_without_secret[:MAX_NAMED_REQUESTS])
        rest = len(signals.accepted_without_secret) - len(named)
        listing = ", ".join(named) + (f" and {rest} more" if rest else "")
        count = len(signals.accepted_without_secret)
        return RootCause(
            "auth-open",
            "the cron accepts requests without the right secret: "
            f"{count} request{'s' if count != 1 else ''} with a wrong or missing secret "
            f"{'were' if count != 1 else 'was'} answered 2xx and ran the job ({listing})",
            OPEN_ENDPOINT_FIX,
            _failing(steps, ("auth_smoke",)),
        )
    if signals.exchange_problem is not None:
        consequences = _failing(steps, EXCHANGE_STEPS)
        if consequences:
            return RootCause(
                "exchange-missing",
                f"the cron exchange was not made: {signals.exchange_problem}",
                exchange_fix(signals.exchange_status, signals.exchange_problem),
                consequences,
            )
        return None
    keys = signals.processed_keys if signals.processed_keys else signals.active_keys
    if keys and signals.failed_keys is not None and signals.failed_keys >= keys:
        consequences = _failing(steps, ALL_KEYS_STEPS)
        if consequences:
            issues = ", ".join(
                f"{c}: {n}" for c, n in sorted((signals.issues_by_code or {}).items())
            )
            return RootCause(
                "all-keys-failed",
                f"every key failed at the provider (failedKeys {signals.failed_keys} of {keys}"
                f"{'; issuesByCode ' + issues if issues else ''}), yet the cron answered 200: "
                "nothing was ingested",
                "read the app's logs for the provider errors, check the admin keys (scope, "
                "revoked) and OpenAI's status, then run again",
                consequences,
            )
    one_window_per_key = (
        bool(signals.active_keys) and signals.windows_processed == signals.active_keys
    )
    evidence = []
    if signals.flag_value is False:
        evidence.append("flags.enableDailyUsageWindows is false")
    if one_window_per_key:
        evidence.append(
            f"windowsProcessed {signals.windows_processed}: one window per key, not 2 x "
            f"{signals.active_keys} daily windows"
        )
    if signals.unaligned_rows_written:
        evidence.append(
            f"{signals.unaligned_rows_written} row(s) written with windows that are not UTC days"
        )
    if signals.flag_value is not True and evidence:
        consequences = _failing(steps, FLAG_OFF_STEPS)
        if consequences:
            return RootCause(
                "flag-off",
                f"ENABLE_DAILY_USAGE_WINDOWS is off {'in staging' if remote else 'on the local stack'}"
                " (" + "; ".join(evidence) + ")",
                FLAG_FIX if remote else FLAG_FIX.replace("the staging", "the app's"),
                consequences,
            )
    return None


# The auth check fails for several reasons, each with its own fix: only the one that applies
# is printed (its status in the failure reason), else the step's whole advice.
AUTH_ADVICE: tuple[tuple[str, str], ...] = (
    (
        r"expected 401 Unauthorized, got status 2\d\d",
        "the app accepted a wrong or missing secret: " + OPEN_ENDPOINT_FIX,
    ),
    (r"got status 401", "fix CRON_SECRET for this target before scheduling"),
    (r"got status 405", "see --cron-method (CRON_METHOD=GET), or add a POST handler to the app"),
    (
        r"got status 5\d\d|no answer|JSON",
        "read the status and body in the smoke log, and the app's logs for this request",
    ),
)


def advice_for(step: str, reason: str = "") -> str:
    """What to do about ``step`` failing with ``reason``: only the advice that applies."""
    if step == "auth_smoke":
        for pattern, advice in AUTH_ADVICE:
            if re.search(pattern, reason):
                return advice
    return STEP_ADVICE.get(step, "")
