"""The markers the plugin defines, registered by it (``pytest_configure``) so that any project
that installs cron-dryrun can run its checks under ``--strict-markers``."""

from __future__ import annotations

from cron_dryrun.rules.gate import REQUIRED_STEPS

# runbook section of each step marker; the step's meaning comes from REQUIRED_STEPS
RUNBOOK_SECTIONS: dict[str, str] = {
    "prerequisites": "runbook Prerequisites",
    "auth_smoke": "runbook Pre-Run Validation 2",
    "flag_state": "runbook Pre-Run Validation 3",
    "telemetry": "runbook 48-Hour Checklist 2",
    "window_scoping": "runbook 48-Hour Checklist 3",
    "no_simulated_keys": "runbook Post-Run Verification",
    "idempotent_rerun": "the rerun check",
    "parity": "runbook Post-Run Verification",
}


def marker_lines() -> tuple[str, ...]:
    """Each marker as the ``markers`` ini option reads it: ``name: description``."""
    lines = ["dryrun: a runbook check of the daily usage cron dry run (a required gate check)"]
    lines += [
        f"{step}: {RUNBOOK_SECTIONS.get(step, 'a gate step')} - {meaning}"
        for step, meaning in REQUIRED_STEPS.items()
    ]
    lines += [
        "triggers_cron: triggers the cron itself (auth negatives, rerun); runs after the "
        "read-only checks",
        "destructive: writes to the app database (rollback); deselected unless --allow-destructive",
    ]
    return tuple(lines)
