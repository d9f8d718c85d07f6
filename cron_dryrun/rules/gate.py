"""The GO / NO-GO verdict from the checks' outcomes. Pure.

Every runbook step is a required check. GO only when each required step ran
and every test of it passed: skipped, errored, xfailed or not run is NO-GO. A
collected test that did not run (deselected with ``-k``, stopped by ``-x``) makes
its step "partial": NO-GO, naming the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# The runbook steps, in runbook order: marker name -> what it proves.
REQUIRED_STEPS: dict[str, str] = {
    "prerequisites": "secrets, target and schema are in place",
    "auth_smoke": "the cron answers 200 with the secret and 401 without it",
    "flag_state": "flags.enableDailyUsageWindows is true",
    "telemetry": "windowsProcessed, errors, failedKeys, issuesByCode are healthy; every counter is true",
    "window_scoping": "rows landed only in the expected daily windows",
    "no_simulated_keys": "no simulated keys were used",
    "idempotent_rerun": "a rerun updates and never duplicates",
    "parity": "DB totals match the OpenAI usage export",
}
PASSED = "passed"
# worst first: the status a step shows when its tests disagree
PARTIAL = "partial"
STATUS_ORDER = ("error", "failed", "xfailed", "skipped", "not-run", PARTIAL, "xpassed", PASSED)
# how many missing test ids a reason names before it says "and N more"
NAMED_MISSING = 4


@dataclass(frozen=True)
class CheckOutcome:
    """One test of a runbook step, as pytest reported it."""

    nodeid: str
    step: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class StepResult:
    step: str
    status: str
    reason: str
    required: bool = True


@dataclass(frozen=True)
class Verdict:
    go: bool
    steps: tuple[StepResult, ...]
    reasons: tuple[str, ...] = field(default=())
    not_run: tuple[str, ...] = field(default=())  # collected test ids that did not run

    @property
    def label(self) -> str:
        return "GO" if self.go else "NO-GO"

    @property
    def partial(self) -> bool:
        """Some collected test of a required step did not run: never recorded as a full run."""
        return bool(self.not_run)


def _worst(statuses: Iterable[str]) -> str:
    ranked = sorted(statuses, key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else 0)
    return ranked[0] if ranked else "not-run"


def _short_id(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def _not_run_reason(missing: Sequence[str]) -> str:
    named = ", ".join(_short_id(m) for m in missing[:NAMED_MISSING])
    more = f" and {len(missing) - NAMED_MISSING} more" if len(missing) > NAMED_MISSING else ""
    return f"{named}{more} not run"


def decide(
    outcomes: Sequence[CheckOutcome],
    required_steps: Iterable[str] = tuple(REQUIRED_STEPS),
    extra_reasons: Iterable[str] = (),
    collected: Mapping[str, Iterable[str]] | None = None,
) -> Verdict:
    """Fold test outcomes into per-step results and the verdict.

    ``collected``: step -> every test id pytest collected for it, before any
    deselection; a collected test without an outcome makes the step partial.
    """
    steps: list[StepResult] = []
    reasons: list[str] = []
    not_run: list[str] = []
    for step in required_steps:
        mine = [o for o in outcomes if o.step == step]
        ran = {o.nodeid for o in mine}
        missing = sorted(set((collected or {}).get(step, ())) - ran)
        not_run.extend(missing)
        status = _worst(o.status for o in mine)
        if not mine and missing:
            reason = f"not run: {_not_run_reason(missing)}"
        elif not mine:
            reason = "not run: no test of this step was selected or collected"
        elif status == PASSED and missing:
            status = PARTIAL
            reason = f"partial: {_not_run_reason(missing)}"
        elif status == PASSED:
            reason = f"{len(mine)} test(s) passed"
        else:
            bad = next(o for o in mine if o.status == status)
            reason = bad.reason or status
            if missing:
                reason += f" (also partial: {_not_run_reason(missing)})"
        steps.append(StepResult(step, status, reason))
        if status != PASSED:
            reasons.append(f"{step}: {status} - {reason}")
    reasons.extend(extra_reasons)
    return Verdict(
        go=not reasons, steps=tuple(steps), reasons=tuple(reasons), not_run=tuple(not_run)
    )


def stopped_before_trigger(
    cause: str, required_steps: Iterable[str] = tuple(REQUIRED_STEPS)
) -> Verdict:
    """NO-GO for a run that never reached the cron: its one cause, not a not-run per step."""
    steps = tuple(
        StepResult(step, "not-run", "not run: the run stopped before anything was triggered")
        for step in required_steps
    )
    return Verdict(go=False, steps=steps, reasons=(cause,))


def first_line(text: str, limit: int | None = 160) -> str:
    """A one-line reason; cut at ``limit`` characters (None: never cut, the reader wraps it)."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."
    return ""
