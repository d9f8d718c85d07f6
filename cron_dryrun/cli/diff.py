"""``cron-dryrun diff``: the parity diff as a command, usable without pytest.

    cron-dryrun diff --export exports/ --from 2025-10-06 --to 2025-10-07

Exit status: 0 pass; 1 fail or inconclusive; 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from cron_dryrun.cli.options import (
    DatabaseNotReady,
    add_audit_dir,
    audit_dir_option,
    database_option,
    environment,
    option,
    option_type,
    utc_date,
    waker,
)
from cron_dryrun.errors import ExitCode, SettingsError

PROGRESS_MIN_BYTES = 20_000_000  # smaller inputs finish in about a second: no bar
STAGES = ("reading export", "waiting for the database", "querying the database", "comparing",
          "writing the detail file")  # fmt: skip
NO_DATABASE = (
    "no database to compare with: pass --database-url postgres://... or set DATABASE_URL "
    "(the app database the cron writes to; it is only read)"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="parity diff: OpenAI usage export vs usage_events, per key and UTC day",
        description=(
            "Compare the OpenAI usage export(s) with the app database's usage_events, per key "
            "and UTC day, under the runbook's policy. Exit status 0 only when parity holds."
        ),
    )
    parser.add_argument(
        "--export", dest="exports", metavar="PATH", nargs="+", action="extend", required=True,
        type=Path, help="export file (CSV, TSV paste, admin-API JSON pages) or folder; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--database-url", default=None, help="the app's PostgreSQL DSN [DATABASE_URL]; only read"
    )
    parser.add_argument(
        "--db-connect-timeout", type=option_type("db_connect_timeout"), default=None,
        help="seconds to keep retrying the first connection while the database wakes "
        "[DB_CONNECT_TIMEOUT] (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-insecure-db", action="store_true",
        help="permit sslmode=disable to a database that is not on this machine",
    )  # fmt: skip
    parser.add_argument("--from", dest="first_day", type=utc_date, help="first UTC day, inclusive")
    parser.add_argument("--to", dest="last_day", type=utc_date, help="last UTC day, inclusive")
    parser.add_argument(
        "--threshold", type=option_type("parity_threshold"), default=None,
        help="max relative token delta per key-day and in total [PARITY_THRESHOLD] (default 0.02)",
    )  # fmt: skip
    parser.add_argument(
        "--open-from", type=utc_date, default=None,
        help="this UTC day and later are still open: reported, not judged (default: today, UTC)",
    )  # fmt: skip
    parser.add_argument(
        "--tolerate-bad-rows", action="store_true",
        help="report unreadable export rows without failing on them (they are never counted)",
    )  # fmt: skip
    parser.add_argument(
        "--output", type=Path, default=None,
        help="report file (default: <audit-dir>/telemetry-audit/<timestamp>-cron-diff.json)",
    )  # fmt: skip
    add_audit_dir(parser, "evidence root")
    parser.add_argument("--no-progress", action="store_true", help="never draw the progress bar")
    parser.add_argument(
        "--db-reader", choices=("auto", "adbc", "copy-csv"), default=None,
        help="how usage_events is read: adbc (Arrow), copy-csv, or auto = adbc with a fallback "
        "to copy-csv [CRON_DRYRUN_DB_READER] (default auto)",
    )  # fmt: skip
    parser.set_defaults(func=run)


class ProgressBar:
    """A one-line stage bar on stderr; drawn only on a terminal and for long inputs."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream, self.enabled, self.step = stream, enabled, 0

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        self.step += 1
        done = min(self.step, len(STAGES))
        bar = "#" * (done * 20 // len(STAGES))
        self.stream.write(f"\r[{bar:<20}] {message[:60]:<60}")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.step:
            self.stream.write("\r" + " " * 84 + "\r")
            self.stream.flush()


def run(
    args: argparse.Namespace, env: Mapping[str, str] | None = None, now: datetime | None = None
) -> int:
    """The command body; ``env``/``now`` are injectable for tests."""
    from cron_dryrun.parity.formats import expand_export_paths
    from cron_dryrun.parity.report import report_path, write_report
    from cron_dryrun.parity.rules import Policy

    env = environment(env)
    now = now or datetime.now(UTC)
    # checked by the settings' row before libpq reads it, and secured as every connection is
    dsn = database_option(args, env, args.allow_insecure_db)
    if not dsn:
        raise SettingsError(NO_DATABASE)
    missing = [str(p) for p in args.exports if not p.exists()]
    if missing:
        raise SettingsError(f"export not found: {', '.join(missing)}")
    if args.first_day and args.last_day and args.first_day > args.last_day:
        raise SettingsError("--from is after --to")
    threshold = option("parity_threshold", args.threshold, env)
    timeout_s = option("db_connect_timeout", args.db_connect_timeout, env)
    policy = Policy(threshold=threshold, bad_rows_fail=not args.tolerate_bad_rows)
    audit_dir = audit_dir_option(args, env)
    output: Path = args.output or report_path(audit_dir, now)
    if output.exists():
        raise SettingsError(f"{output} exists; it is never overwritten")
    files = expand_export_paths(args.exports)
    size = sum(p.stat().st_size for p in files)
    bar = ProgressBar(
        sys.stderr, not args.no_progress and sys.stderr.isatty() and size >= PROGRESS_MIN_BYTES
    )
    open_from = args.open_from or now.astimezone(UTC).date()
    from cron_dryrun.parity.db_reader import reader_choice

    try:
        db_reader = reader_choice(getattr(args, "db_reader", None), env)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    # a suspended database is waited for when the first connection fails, in the database
    # thread, while the export is read: a database that answers costs no extra connection
    wake = waker(dsn, "cron-dryrun diff", timeout_s)
    from cron_dryrun.parity.engine import ParityRequest, run_parity

    request = ParityRequest(
        files,
        dsn,
        output,
        policy,
        first_day=args.first_day,
        last_day=args.last_day,
        open_from=open_from,
        db_reader=db_reader,
        wake=wake,
    )
    try:
        outcome = run_parity(request, progress=bar, now=now)
    except DatabaseNotReady:  # said as it gave up
        bar.close()
        return ExitCode.USAGE
    except (OSError, ValueError) as exc:
        bar.close()
        print(f"cron-dryrun diff: {_redacted(str(exc), dsn)}", file=sys.stderr)
        return ExitCode.USAGE
    except Exception as exc:  # last resort: psycopg, ADBC and DuckDB errors share no base
        from cron_dryrun.redaction import redact_dsn

        bar.close()
        said = _redacted(f"{type(exc).__name__}: {exc}", dsn)
        print(f"cron-dryrun diff: {redact_dsn(dsn)}: {said}", file=sys.stderr)
        return ExitCode.USAGE
    bar.close()
    write_report(outcome.result, output)
    print(outcome.summary())
    if not outcome.passed:
        print("", file=sys.stderr)
        print(outcome.failure(), file=sys.stderr)
    return ExitCode.OK if outcome.passed else ExitCode.FAIL


def _redacted(message: str, dsn: str) -> str:
    """An error's text with the DSN's password gone in any form (a driver may echo the
    connection string back), redacted as the wake-up's messages are (``options.waker``)."""
    from cron_dryrun.evidence import Redactor, run_secrets

    return Redactor(run_secrets(None, dsn)).redact(message)
