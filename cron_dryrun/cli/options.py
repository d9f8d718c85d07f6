"""Option values the subcommands share, checked where they enter, with messages that name the fix."""

from __future__ import annotations

import sys
from collections.abc import Mapping
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


def wake(dsn: str, command: str, timeout_s: float | None, env: Mapping[str, str]) -> bool:
    """Wait for a suspended database (a Neon compute) to answer, up to ``--db-connect-timeout``
    / ``DB_CONNECT_TIMEOUT`` (default 30 s), saying so on stderr; False, said, when it does not."""
    from cron_dryrun.evidence import Redactor, run_secrets
    from cron_dryrun.target.database import redact_dsn
    from cron_dryrun.target.db_wake import (
        DEFAULT_CONNECT_TIMEOUT_S,
        DatabaseWakeError,
        wake_database,
    )

    if timeout_s is None:
        try:
            timeout_s = float(env.get("DB_CONNECT_TIMEOUT", "") or DEFAULT_CONNECT_TIMEOUT_S)
        except ValueError:
            print(f"{command}: DB_CONNECT_TIMEOUT: expected seconds", file=sys.stderr)
            return False

    redact = Redactor(run_secrets(None, dsn)).redact  # a driver message never echoes a password

    def say(message: str) -> None:
        print(f"{command}: {redact(message)}", file=sys.stderr, flush=True)

    try:
        wake_database(dsn, timeout_s, say=say)
    except DatabaseWakeError as exc:
        # the DSN shown without its password; the driver's message redacted like the rest
        print(f"{command}: {redact_dsn(dsn)}: {redact(str(exc))}", file=sys.stderr, flush=True)
        return False
    return True
