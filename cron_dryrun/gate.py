"""The GO / NO-GO verdict from the checks' outcomes. Pure.

Every runbook step is a required check. GO only when each required step ran
and every test of it passed: skipped, errored, xfailed or not run is NO-GO.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# The runbook steps, in runbook order: marker name -> what it proves.
REQUIRED_STEPS: dict[str, str] = {
    "prerequisites": "secrets, target and schema are in place",
    "auth_smoke": "the cron answers 200 with the secret and 401 without it",
    "flag_state": "flags.enableDailyUsageWindows is true",
    "telemetry": "windowsProcessed, errors, failedKeys, issuesByCode are healthy",
    "window_scoping": "rows landed only in the expected daily windows",
    "no_simulated_keys": "no simulated keys were used",
    "idempotent_rerun": "a rerun updates and never duplicates",
    "parity": "DB totals match the OpenAI usage export",
}
PASSED = "passed"
# worst first: the status a step shows when its tests disagree
STATUS_ORDER = ("error", "failed", "xfailed", "skipped", "not-run", "xpassed", PASSED)


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

    @property
    def label(self) -> str:
        return "GO" if self.go else "NO-GO"


def _worst(statuses: Iterable[str]) -> str:
    ranked = sorted(statuses, key=lambda s: STATUS_ORDER.index(s) if s in STATUS_ORDER else 0)
    return ranked[0] if ranked else "not-run"


def decide(
    outcomes: Sequence[CheckOutcome],
    required_steps: Iterable[str] = tuple(REQUIRED_STEPS),
    extra_reasons: Iterable[str] = (),
) -> Verdict:
    """Fold test outcomes into per-step results and the verdict."""
    steps: list[StepResult] = []
    reasons: list[str] = []
    for step in required_steps:
        mine = [o for o in outcomes if o.step == step]
        status = _worst(o.status for o in mine)
        if not mine:
            reason = "not run: no test of this step was selected or collected"
        elif status == PASSED:
            reason = f"{len(mine)} test(s) passed"
        else:
            bad = next(o for o in mine if o.status == status)
            reason = bad.reason or status
        steps.append(StepResult(step, status, reason))
        if status != PASSED:
            reasons.append(f"{step}: {status} - {reason}")
    reasons.extend(extra_reasons)
    return Verdict(go=not reasons, steps=tuple(steps), reasons=tuple(reasons))


def first_line(text: str, limit: int | None = 160) -> str:
    """A one-line reason; cut at ``limit`` characters (None: never cut, the reader wraps it)."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."
    return ""
