"""Option values the subcommands share, checked where they enter, with messages that name the fix."""

from __future__ import annotations

from datetime import datetime

from cron_dryrun.config.settings import parse_utc


class UsageError(ValueError):
    """A bad option value; the message names the option, its variable and the form wanted."""


def dry_run_start(value: str | None, command: str) -> datetime | None:
    """``--dry-run-start`` / ``DRY_RUN_START`` as a UTC time; None when not given."""
    if not value:
        return None
    try:
        return parse_utc(value)
    except ValueError:
        raise UsageError(
            f"{command}: --dry-run-start / DRY_RUN_START: expected an ISO time like "
            f"2025-10-07T02:00:00Z (got {value!r})"
        ) from None
