"""``cron-dryrun rollback --since ISO``: the runbook's "truncate partially ingested staging rows".

Count first, show the count and the exact statement, ask, then delete in one
transaction with a statement timeout; commit only when the rows deleted are
the rows shown. Every committed or aborted delete is logged in
audit/rollback_log.md with the runbook's two manual steps as a checklist.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from cron_dryrun.cli.options import (
    add_audit_dir,
    add_dry_run_start,
    audit_dir_option,
    database_option,
    dry_run_start_option,
    option,
    option_type,
    wake,
)
from cron_dryrun.config.parsers import parse_utc
from cron_dryrun.errors import CronDryrunError, ExitCode, SettingsError
from cron_dryrun.evidence import (
    LEDGER_RELPATH,
    ROLLBACK_LOG_RELPATH,
    EvidenceWriter,
    Redactor,
    run_secrets,
)
from cron_dryrun.evidence.ledger import dry_run_start_of, read_ledger
from cron_dryrun.redaction import redact_dsn

STATEMENT_TIMEOUT_S = 60.0
ROLLBACK_LOG_TITLE = "# Rollback log"
MANUAL_STEPS = (
    "Cron schedule disabled in Vercel",
    "ENABLE_DAILY_USAGE_WINDOWS reset to false in staging",
)

# (rows counted, the exact statement, the redacted database) -> go ahead?
Confirm = Callable[[int, str, str], bool]


class RollbackRefused(CronDryrunError, ValueError):
    """The rollback was not attempted; the message says why and what to do."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class RollbackResult:
    since: datetime
    statement: str
    database: str  # redacted
    counted: int
    deleted: int  # committed deletions: 0 unless committed
    committed: bool
    message: str
    log_path: Path | None = None


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return _utc(value).isoformat().replace("+00:00", "Z")


def check_since(since: datetime, *, now: datetime, dry_run_start: datetime | None) -> None:
    """Refuse a ``since`` in the future or before the dry run began (pure)."""
    since, now = _utc(since), _utc(now)
    if dry_run_start is None:
        raise RollbackRefused(
            "refusing to roll back: the dry-run start is unknown, so rows older than the dry run "
            "could be deleted; pass --dry-run-start (the first run's earliest window, a UTC "
            "midnight) or point --audit-dir at the dry run's evidence"
        )
    if since > now:
        raise RollbackRefused(
            f"refusing to roll back: --since {_iso(since)} is in the future (now {_iso(now)}); "
            "no dry-run row can start after now"
        )
    if since < _utc(dry_run_start):
        raise RollbackRefused(
            f"refusing to roll back: --since {_iso(since)} is before the dry-run start "
            f"{_iso(dry_run_start)}; rows older than the dry run are not the dry run's to delete "
            "(pass --dry-run-start if the dry run began earlier)"
        )


def delete_statement(since: datetime) -> sql.Composed:
    # window_start is `timestamp without time zone` holding UTC: compare with naive UTC
    naive = _utc(since).replace(tzinfo=None)
    return sql.SQL("DELETE FROM usage_events WHERE window_start >= {}").format(sql.Literal(naive))


def _log_entry(result: RollbackResult, now: datetime, dry_run_start: datetime | None) -> str:
    outcome = (
        f"{result.deleted} row(s) deleted, committed"
        if result.committed
        else f"nothing deleted, transaction rolled back: {result.message}"
    )
    lines = [
        f"## {_iso(now.replace(microsecond=0))} — usage_events rows since {_iso(result.since)}",
        "",
        f"- Time: {_iso(now.replace(microsecond=0))}",
        f"- Since: {_iso(result.since)}",
        f"- Dry-run start: {_iso(dry_run_start) if dry_run_start else 'unknown'}",
        f"- Database: {result.database}",
        f"- Statement: `{result.statement}`",
        f"- Rows counted and shown: {result.counted}",
        f"- Outcome: {outcome}",
        "",
        "Manual steps (runbook Rollback Procedure), tick when done:",
        "",
        *(f"- [ ] {step}" for step in MANUAL_STEPS),
        "",
        "Log references (Vercel / Neon, add links):",
        "",
    ]
    return "\n".join(lines)


def _append_log(writer: EvidenceWriter, entry: str) -> Path:
    def append(existing: str) -> str:
        if not existing.strip():
            existing = (
                f"{ROLLBACK_LOG_TITLE}\n\nNewest last. Each entry: what was deleted, when, how.\n"
            )
        sep = "" if existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
        return existing + sep + entry

    return writer.update_locked(ROLLBACK_LOG_RELPATH, append)


def rollback(
    dsn: str,
    since: datetime,
    *,
    now: datetime,
    dry_run_start: datetime | None,
    confirm: Confirm,
    writer: EvidenceWriter,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
) -> RollbackResult:
    """Delete usage_events rows with window_start >= since, as counted and confirmed.

    Raises RollbackRefused before touching the database when ``since`` is out
    of bounds. Returns committed=False (nothing deleted) when not confirmed or
    when the delete's row count differs from the count shown.
    """
    check_since(since, now=now, dry_run_start=dry_run_start)
    since = _utc(since)
    database = redact_dsn(dsn)
    statement = delete_statement(since)
    naive = since.replace(tzinfo=None)
    timeout = sql.SQL("SET LOCAL statement_timeout = {}").format(
        sql.Literal(f"{max(1, int(statement_timeout_s * 1000))}ms")
    )
    # prepare_threshold=None: no server-side prepared statements through a transaction pooler
    with psycopg.connect(dsn, connect_timeout=10, autocommit=False, prepare_threshold=None) as conn:
        shown = statement.as_string(conn)
        with conn.transaction():
            conn.execute(timeout)
            row = conn.execute(
                "SELECT count(*) FROM usage_events WHERE window_start >= %s", (naive,)
            ).fetchone()
        counted = int(row[0]) if row else 0
        # the count transaction is closed: nothing is held open while a person decides
        if not confirm(counted, shown, database):
            return RollbackResult(
                since, shown, database, counted, 0, False, "not confirmed; nothing deleted"
            )
        deleted = -1
        committed = False
        try:
            with conn.transaction() as tx:
                conn.execute(timeout)
                deleted = conn.execute(statement).rowcount
                if deleted != counted:
                    raise psycopg.Rollback(tx)  # leave the block, rolled back, no exception outside
                committed = True
        except psycopg.errors.QueryCanceled as exc:
            result = RollbackResult(
                since,
                shown,
                database,
                counted,
                0,
                False,
                f"the delete exceeded the {statement_timeout_s:g}s statement timeout and was rolled back ({exc})",
            )
            return _logged(result, writer, now, dry_run_start)
    if committed:
        message = f"deleted {deleted} row(s) with window_start >= {_iso(since)}; committed"
        result = RollbackResult(since, shown, database, counted, deleted, True, message)
    else:
        message = (
            f"the delete matched {deleted} row(s) but {counted} were counted and shown; "
            "rolled back, nothing deleted (rows changed in between: is the cron still running? "
            "disable it, then run the rollback again)"
        )
        result = RollbackResult(since, shown, database, counted, 0, False, message)
    return _logged(result, writer, now, dry_run_start)


def _logged(
    result: RollbackResult, writer: EvidenceWriter, now: datetime, dry_run_start: datetime | None
) -> RollbackResult:
    """``result`` with the rollback_log.md entry written (committed and aborted deletes alike)."""
    path = _append_log(writer, _log_entry(result, now, dry_run_start))
    return RollbackResult(
        result.since,
        result.statement,
        result.database,
        result.counted,
        result.deleted,
        result.committed,
        result.message,
        path,
    )


# -- the command ----------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "rollback",
        help="delete usage_events rows with window_start >= --since (counted, confirmed, logged)",
        description=(
            "The runbook's rollback: count usage_events rows with window_start >= SINCE, show the "
            "count and the statement, and after confirmation delete them in one transaction; the "
            "action is appended to audit/rollback_log.md with the two manual steps to tick."
        ),
    )
    parser.add_argument(
        "--since", required=True, help="ISO time; rows with window_start >= it are deleted"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help="the app's PostgreSQL DSN [DATABASE_URL]",
    )
    parser.add_argument(
        "--yes", action="store_true", help="confirm without asking (after reading the count)"
    )
    add_audit_dir(parser, "evidence root for rollback_log.md")
    add_dry_run_start(
        parser, "the UTC midnight of the earliest window of the ledger's first run for --target"
    )
    parser.add_argument(
        "--target",
        default=None,
        help="the cron URL whose ledger runs give the dry-run start [CRON_URL] "
        "(default: the ledger's latest remote run's)",
    )
    parser.add_argument(
        "--statement-timeout", type=float, default=STATEMENT_TIMEOUT_S, help="seconds (default: 60)"
    )
    parser.add_argument(
        "--db-connect-timeout",
        type=option_type("db_connect_timeout"),
        default=None,
        help="seconds to keep retrying the first connection while the database wakes "
        "[DB_CONNECT_TIMEOUT] (default 30)",
    )
    parser.add_argument(
        "--allow-insecure-db",
        action="store_true",
        help="permit sslmode=disable to a database that is not on this machine",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, now: datetime | None = None) -> int:
    # checked by the settings' row before libpq reads it; TLS to another machine, as every
    # other connection: the one command that writes is no exception
    dsn = database_option(args, allow_insecure=args.allow_insecure_db)
    if not dsn:
        raise SettingsError("no database: pass --database-url or set DATABASE_URL")
    audit_dir = audit_dir_option(args)
    try:
        since = parse_utc(args.since)
    except ValueError:
        raise SettingsError(
            f"--since: expected an ISO time like 2025-10-07T00:00:00Z (got {args.since!r})"
        ) from None
    dry_run_start = dry_run_start_option(args)
    if dry_run_start is None:
        target = option("cron_url", args.target, where="--target / CRON_URL")
        ledger_path = audit_dir / LEDGER_RELPATH
        dry_run_start = dry_run_start_of(read_ledger(ledger_path).entries, target)
        if dry_run_start is None:
            which = f"for {target}" if target else "against a remote target"
            raise RollbackRefused(
                f"refusing to roll back: the dry-run start is unknown: {ledger_path} has no run "
                f"{which} and no --dry-run-start / DRY_RUN_START was given, so rows older than the "
                "dry run could be deleted. Point --audit-dir at the dry run's evidence, or pass "
                "--dry-run-start (the first run's earliest window, a UTC midnight)"
            )
    if args.statement_timeout <= 0:
        raise SettingsError("--statement-timeout: expected a positive number of seconds")
    timeout_s = option("db_connect_timeout", args.db_connect_timeout)

    def confirm(counted: int, statement: str, database: str) -> bool:
        print(f"database: {database}")
        print(f"rows with window_start >= {_iso(since)}: {counted}")
        print(f"statement: {statement}")
        if args.yes:
            return True
        if not sys.stdin.isatty():
            print(
                "cron-dryrun rollback: refusing to delete without confirmation: stdin is not a "
                "terminal; check the count and statement above, then rerun with --yes",
                file=sys.stderr,
            )
            return False
        answer = input(f"Delete these {counted} row(s)? Type 'yes' to confirm: ")
        return answer.strip().lower() == "yes"

    # a suspended Neon compute: wait for it (bounded), as the run and `diff` do
    if not wake(dsn, "cron-dryrun rollback", timeout_s):
        return ExitCode.FAIL
    writer = EvidenceWriter(audit_dir, Redactor(run_secrets(None, dsn)))
    try:
        result = rollback(
            dsn,
            since,
            now=now or datetime.now(UTC),
            dry_run_start=dry_run_start,
            confirm=confirm,
            writer=writer,
            statement_timeout_s=args.statement_timeout,
        )
    except psycopg.Error as exc:
        print(
            f"cron-dryrun rollback: database error on {redact_dsn(dsn)}: "
            f"{writer.redactor.redact(str(exc).strip())}",
            file=sys.stderr,
        )
        return ExitCode.FAIL
    if result.committed:
        print(result.message)
    else:
        print(f"cron-dryrun rollback: {result.message}", file=sys.stderr)
    if result.log_path is not None:
        print(f"logged in {result.log_path}; tick the manual steps there once done:")
        for step in MANUAL_STEPS:
            print(f"  - [ ] {step}")
    return ExitCode.OK if result.committed else ExitCode.FAIL
