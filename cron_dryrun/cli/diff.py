"""``cron-dryrun diff``: the parity diff as a command, usable without pytest.

    cron-dryrun diff --export exports/ --from 2025-10-06 --to 2025-10-07

Exit status: 0 pass; 1 fail or inconclusive; 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from cron_dryrun.parity.reconcile import DiffResult, UnrecordedProbe

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
PROGRESS_MIN_BYTES = 20_000_000  # smaller inputs finish in about a second: no bar
STAGES = ("reading export", "waiting for the database", "querying the database", "comparing",
          "writing the detail file")  # fmt: skip
NO_DATABASE = (
    "no database to compare with: pass --database-url postgres://... or set DATABASE_URL "
    "(the app database the cron writes to; it is only read)"
)


def _utc_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a UTC date like 2025-10-07, got {text!r}"
        ) from None


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.02, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a fraction strictly between 0 and 1 (0.02 means 2 %), got {text!r}"
        )
    return value


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
        "--db-connect-timeout", type=float, default=None,
        help="seconds to keep retrying the first connection while the database wakes "
        "[DB_CONNECT_TIMEOUT] (default 30)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-insecure-db", action="store_true",
        help="permit sslmode=disable to a database that is not on this machine",
    )  # fmt: skip
    parser.add_argument("--from", dest="first_day", type=_utc_date, help="first UTC day, inclusive")
    parser.add_argument("--to", dest="last_day", type=_utc_date, help="last UTC day, inclusive")
    parser.add_argument(
        "--threshold", type=_threshold, default=None,
        help="max relative token delta per key-day and in total [PARITY_THRESHOLD] (default 0.02)",
    )  # fmt: skip
    parser.add_argument(
        "--open-from", type=_utc_date, default=None,
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
    parser.add_argument(
        "--audit-dir", type=Path, default=None, help="evidence root [AUDIT_DIR] (default audit)"
    )
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
    from cron_dryrun.parity.exports import expand_export_paths
    from cron_dryrun.parity.reconcile import (
        Policy,
        detail_path_for,
        failure_message,
        judge,
        reconcile,
        report_path,
        write_report,
    )

    env = os.environ if env is None else env
    now = now or datetime.now(UTC)
    dsn = args.database_url or env.get("DATABASE_URL", "").strip() or None
    if not dsn:
        print(f"cron-dryrun diff: {NO_DATABASE}", file=sys.stderr)
        return EXIT_USAGE
    from cron_dryrun.config.db_url import InsecureDatabaseUrl, secure_database_url

    try:
        dsn = secure_database_url(dsn, args.allow_insecure_db)
    except InsecureDatabaseUrl as exc:
        print(f"cron-dryrun diff: DATABASE_URL: {exc}", file=sys.stderr)
        return EXIT_USAGE
    missing = [str(p) for p in args.exports if not p.exists()]
    if missing:
        print(f"cron-dryrun diff: export not found: {', '.join(missing)}", file=sys.stderr)
        return EXIT_USAGE
    if args.first_day and args.last_day and args.first_day > args.last_day:
        print("cron-dryrun diff: --from is after --to", file=sys.stderr)
        return EXIT_USAGE
    threshold = args.threshold
    if threshold is None:
        try:
            threshold = _threshold(env.get("PARITY_THRESHOLD", "0.02"))
        except argparse.ArgumentTypeError as exc:
            print(f"cron-dryrun diff: PARITY_THRESHOLD: {exc}", file=sys.stderr)
            return EXIT_USAGE
    policy = Policy(threshold=threshold, bad_rows_fail=not args.tolerate_bad_rows)
    audit_dir = args.audit_dir or Path(env.get("AUDIT_DIR", "") or "audit")
    output: Path = args.output or report_path(audit_dir, now)
    if output.exists():
        print(f"cron-dryrun diff: {output} exists; it is never overwritten", file=sys.stderr)
        return EXIT_USAGE
    files = expand_export_paths(args.exports)
    size = sum(p.stat().st_size for p in files)
    bar = ProgressBar(
        sys.stderr, not args.no_progress and sys.stderr.isatty() and size >= PROGRESS_MIN_BYTES
    )
    open_from = args.open_from or now.astimezone(UTC).date()
    from cron_dryrun.parity.db_reader import UsageReader, reader_choice

    try:
        reader = UsageReader(dsn, reader_choice(getattr(args, "db_reader", None), env))
    except ValueError as exc:
        print(f"cron-dryrun diff: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not _wake(dsn, args.db_connect_timeout, env):
        return EXIT_USAGE
    try:
        result = reconcile(
            files,
            reader,
            first_day=args.first_day,
            last_day=args.last_day,
            open_from=open_from,
            policy=policy,
            detail_path=detail_path_for(output),
            progress=bar,
            now=now,
            unrecorded_probe=_lazy_unrecorded_probe(dsn),
        )
    except (OSError, ValueError) as exc:
        bar.close()
        print(f"cron-dryrun diff: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a database error: say which database, never its password
        from cron_dryrun.target.database import redact_dsn

        bar.close()
        print(f"cron-dryrun diff: {redact_dsn(dsn)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bar.close()
    write_report(result, output)
    print(terminal_summary(result, output))
    judgement = judge(result)
    if not judgement.passed:
        print("", file=sys.stderr)
        print(failure_message(result, output), file=sys.stderr)
    return EXIT_PASS if judgement.passed else EXIT_FAIL


def _wake(dsn: str, timeout_s: float | None, env: Mapping[str, str]) -> bool:
    """Wait for a suspended database (a Neon compute) to answer; False, said, when it does not."""
    from cron_dryrun.target.db_wake import (
        DEFAULT_CONNECT_TIMEOUT_S,
        DatabaseWakeError,
        wake_database,
    )

    if timeout_s is None:
        try:
            timeout_s = float(env.get("DB_CONNECT_TIMEOUT", "") or DEFAULT_CONNECT_TIMEOUT_S)
        except ValueError:
            print("cron-dryrun diff: DB_CONNECT_TIMEOUT: expected seconds", file=sys.stderr)
            return False

    def say(message: str) -> None:
        print(f"cron-dryrun diff: {message}", file=sys.stderr, flush=True)

    try:
        wake_database(dsn, timeout_s, say=say)
    except DatabaseWakeError as exc:
        from cron_dryrun.target.database import redact_dsn

        say(f"{redact_dsn(dsn)}: {exc}")
        return False
    return True


def _lazy_unrecorded_probe(dsn: str) -> UnrecordedProbe:
    """usage_totals.unrecorded_probe, imported when first called (rarely: see reconcile)."""

    def probe(days: Sequence[date], metrics: Sequence[str]) -> Mapping[date, frozenset[str]]:
        from cron_dryrun.parity.usage_totals import unrecorded_metrics

        return unrecorded_metrics(dsn, days, metrics)

    return probe


def terminal_summary(result: DiffResult, report: Path) -> str:
    """One screen: verdict, range, per-day table, counts, where the report is."""
    from cron_dryrun.parity.reconcile import judge

    judgement = judge(result)
    c = result.counts
    lines = [
        f"parity diff: {judgement.verdict.upper()}  "
        f"(threshold {result.policy.threshold * 100:g} %, {result.first_day} .. {result.last_day})",
        f"{'day':<11} {'judged':<7} {'key-days':>9} {'mismatch':>8} {'miss DB':>8} {'miss exp':>8} "
        f"{'export out tok':>15} {'db out tok':>15}",
    ]
    for d in result.days[:14]:
        keys = sum(d.key_days.values())
        lines.append(
            f"{d.day.isoformat():<11} {'yes' if d.judged else 'no':<7} {keys:>9} "
            f"{d.key_days['mismatched']:>8} {d.key_days['missingInDb']:>8} "
            f"{d.key_days['missingInCsv']:>8} {d.export['output_tokens']:>15} {d.db['output_tokens']:>15}"
        )
    if len(result.days) > 14:
        lines.append(f"... {len(result.days) - 14} more days in the report")
    for d in result.days:
        if not d.judged:
            lines.append(f"not judged {d.day.isoformat()}: {d.reason}")
    lines.append(
        f"export rows {c['exportRows']} (bad {c['exportBadRows']}, without ids {c['exportRowsWithoutIds']}, "
        f"empty buckets {c['exportEmptyBucketRows']}, outside range {c['exportRowsOutsideRange']}); "
        f"db rows {c['dbRows']} (without ids {c['dbRowsWithoutIds']}, unaligned {c['dbUnalignedRows']})"
    )
    reader = f"database read: {result.db_reader}"
    if result.db_reader_fallback:
        reader += f" (ADBC not used: {result.db_reader_fallback})"
    lines.append(reader)
    lines.extend(f"warning: {w}" for w in judgement.warnings)
    lines.append(f"report: {report}")
    if result.detail_path:
        lines.append(f"detail: {result.detail_path} ({result.detail_lines} lines)")
    lines.append(f"elapsed: {result.elapsed_seconds:.2f} s")
    return "\n".join(lines)
