"""Option values the subcommands share, checked where they enter, with messages that name the fix."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path

from cron_dryrun.config.db_url import check_connect_timeout
from cron_dryrun.errors import CronDryrunError, SettingsError


def dry_run_start(value: str | None, command: str) -> datetime | None:
    """``--dry-run-start`` / ``DRY_RUN_START`` as a UTC time; None when not given."""
    if not value:
        return None
    from cron_dryrun.config.settings import parse_utc  # the settings' import, only when asked

    try:
        return parse_utc(value)
    except ValueError:
        raise SettingsError(
            f"{command}: --dry-run-start / DRY_RUN_START: expected an ISO time like "
            f"2025-10-07T02:00:00Z (got {value!r})"
        ) from None


def add_audit_dir(parser: argparse.ArgumentParser, what: str) -> None:
    """``--audit-dir``, read with ``audit_dir_option`` (AUDIT_DIR, else ``audit``)."""
    parser.add_argument(
        "--audit-dir", type=Path, default=None, help=f"{what} [AUDIT_DIR] (default: audit)"
    )


def audit_dir_option(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Path:
    """The evidence root: ``--audit-dir``, else AUDIT_DIR, else ``audit``."""
    env = os.environ if env is None else env
    return Path(args.audit_dir or env.get("AUDIT_DIR") or "audit")


def add_dry_run_start(parser: argparse.ArgumentParser, default: str) -> None:
    """``--dry-run-start``, read with ``dry_run_start_option`` (DRY_RUN_START as fallback)."""
    parser.add_argument(
        "--dry-run-start",
        default=None,
        help=f"ISO start of the dry run [DRY_RUN_START] (default: {default})",
    )


def dry_run_start_option(
    args: argparse.Namespace, command: str, env: Mapping[str, str] | None = None
) -> datetime | None:
    """``--dry-run-start``, else DRY_RUN_START, as a UTC time; None when neither is given.
    Raises SettingsError naming both and the form wanted."""
    env = os.environ if env is None else env
    return dry_run_start(args.dry_run_start or env.get("DRY_RUN_START") or None, command)


def utc_date(text: str) -> date:
    """An argparse type: a UTC day like 2025-10-07 (``--from``, ``--to``, ``--open-from``)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a UTC date like 2025-10-07, got {text!r}"
        ) from None


def _connect_timeout(text: str) -> float:
    """Seconds by the settings' rule (``db_url.check_connect_timeout``), naming what was given."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # not a number: the rule refuses it like any value out of range
    try:
        return check_connect_timeout(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (got {text!r})") from None


def connect_timeout(text: str) -> float:
    """An argparse type: ``--db-connect-timeout`` seconds, checked where it enters."""
    try:
        return _connect_timeout(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class DatabaseNotReady(CronDryrunError):
    """The database did not answer within the wake-up wait; the message was already said."""


def waker(
    dsn: str, command: str, timeout_s: float | None, env: Mapping[str, str]
) -> Callable[[], int] | None:
    """A wake-up for a suspended database (a Neon compute), to call when a connection is due:
    it retries up to ``--db-connect-timeout`` / ``DB_CONNECT_TIMEOUT`` (default 30 s), saying
    so on stderr, returns the attempts it took, and raises DatabaseNotReady, said, when the
    database never answers. None, said, when DB_CONNECT_TIMEOUT is not seconds in range."""
    from cron_dryrun.target.db_wake import DEFAULT_CONNECT_TIMEOUT_S

    if timeout_s is None:
        try:
            timeout_s = _connect_timeout(
                env.get("DB_CONNECT_TIMEOUT", "") or str(DEFAULT_CONNECT_TIMEOUT_S)
            )
        except ValueError as exc:
            print(f"{command}: DB_CONNECT_TIMEOUT: {exc}", file=sys.stderr)
            return None
    limit = timeout_s

    def wake_now() -> int:
        from cron_dryrun.evidence import Redactor, run_secrets
        from cron_dryrun.redaction import redact_dsn
        from cron_dryrun.target.db_wake import DatabaseWakeError, wake_database

        redact = Redactor(run_secrets(None, dsn)).redact  # a driver message never echoes it

        def say(message: str) -> None:
            print(f"{command}: {redact(message)}", file=sys.stderr, flush=True)

        try:
            return wake_database(dsn, limit, say=say)
        except DatabaseWakeError as exc:
            # the DSN shown without its password; the driver's message redacted like the rest
            print(f"{command}: {redact_dsn(dsn)}: {redact(str(exc))}", file=sys.stderr, flush=True)
            raise DatabaseNotReady(redact(str(exc))) from None

    return wake_now


def wake(dsn: str, command: str, timeout_s: float | None, env: Mapping[str, str]) -> bool:
    """Wait for a suspended database now (``waker``); False, said, when it does not answer."""
    wake_now = waker(dsn, command, timeout_s, env)
    if wake_now is None:
        return False
    try:
        wake_now()
    except DatabaseNotReady:
        return False
    return True
