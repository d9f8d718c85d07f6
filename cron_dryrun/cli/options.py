"""Option values the subcommands share, read through the settings table (config/options.py):
the same rows, parsers and messages as a dry run's settings, and the one place the commands
read the environment."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any

from cron_dryrun.config.options import OPTIONS_BY_NAME, read_option
from cron_dryrun.config.parsers import secured_dsn
from cron_dryrun.errors import CronDryrunError, SettingsError


def environment(env: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """``env``, or this process's environment: read only through the table's rows."""
    return os.environ if env is None else env


def option(
    name: str, given: Any, env: Mapping[str, str] | None = None, where: str | None = None
) -> Any:
    """The option ``name`` as the table reads it: ``given`` (the flag's value), else its
    variable, else its default; SettingsError naming ``where`` it came from."""
    return read_option(name, given, environment(env), where)


def option_type(name: str) -> Callable[[str], Any]:
    """An argparse ``type``: the row's parser, so a bad flag value is refused where it enters,
    in the table's words (argparse names the flag)."""

    def parse(text: str) -> Any:
        try:
            return OPTIONS_BY_NAME[name].read(text, "")
        except SettingsError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def database_option(
    args: argparse.Namespace, env: Mapping[str, str] | None = None, allow_insecure: bool = False
) -> str | None:
    """``--database-url``, else DATABASE_URL, checked by the settings' row (refused quoting
    nothing) and secured as every connection is (``secure_dsn``); None when neither is given."""
    dsn = read_option("database_url", args.database_url, environment(env), where="DATABASE_URL")
    return None if dsn is None else secured_dsn("DATABASE_URL", dsn, allow_insecure)


def add_audit_dir(parser: argparse.ArgumentParser, what: str) -> None:
    """``--audit-dir``, read with ``audit_dir_option`` (AUDIT_DIR, else ``audit``)."""
    parser.add_argument(
        "--audit-dir", type=Path, default=None, help=f"{what} [AUDIT_DIR] (default: audit)"
    )


def audit_dir_option(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Path:
    """The evidence root: ``--audit-dir``, else AUDIT_DIR, else ``audit``."""
    return Path(option("audit_dir", args.audit_dir, env))


def add_dry_run_start(parser: argparse.ArgumentParser, default: str) -> None:
    """``--dry-run-start``, read with ``dry_run_start_option`` (DRY_RUN_START as fallback)."""
    parser.add_argument(
        "--dry-run-start",
        default=None,
        help=f"ISO start of the dry run [DRY_RUN_START] (default: {default})",
    )


def dry_run_start_option(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> datetime | None:
    """``--dry-run-start``, else DRY_RUN_START, as a UTC time; None when neither is given.
    Raises SettingsError naming both and the form wanted."""
    spec = OPTIONS_BY_NAME["dry_run_start"]
    value: datetime | None = read_option(
        spec.name, args.dry_run_start, environment(env), where=spec.where()
    )
    return value


def utc_date(text: str) -> date:
    """An argparse type: a UTC day like 2025-10-07 (``--from``, ``--to``, ``--open-from``)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a UTC date like 2025-10-07, got {text!r}"
        ) from None


class DatabaseNotReady(CronDryrunError):
    """The database did not answer within the wake-up wait; the message was already said."""


def waker(dsn: str, command: str, timeout_s: float) -> Callable[[], int]:
    """A wake-up for a suspended database (a Neon compute), to call when a connection is due:
    it retries up to ``timeout_s`` (``--db-connect-timeout`` / ``DB_CONNECT_TIMEOUT``), saying
    so on stderr, returns the attempts it took, and raises DatabaseNotReady, said, when the
    database never answers."""
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


def wake(dsn: str, command: str, timeout_s: float) -> bool:
    """Wait for a suspended database now (``waker``); False, said, when it does not answer."""
    try:
        waker(dsn, command, timeout_s)()
    except DatabaseNotReady:
        return False
    return True
