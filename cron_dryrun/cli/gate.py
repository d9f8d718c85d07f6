"""``cron-dryrun gate``: where the 48-hour dry run stands, read from the ledger.

Exit 0 only when the dry run is complete; 1 when it is not; 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from cron_dryrun.cli.options import (
    UsageError,
    add_audit_dir,
    add_dry_run_start,
    audit_dir_option,
    dry_run_start_option,
)
from cron_dryrun.evidence import LEDGER_RELPATH
from cron_dryrun.evidence.ledger import assess, read_ledger, targets_in


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="where the 48-hour dry run stands (exit 0 only when complete)",
        description=(
            "Read audit/cron-dry-run/ledger.jsonl and say where the 48-hour dry run stands: "
            "complete when two green runs 20 to 28 hours apart cover 48 hours since the dry-run "
            "start, with no red run left unanswered by a later green one."
        ),
    )
    add_audit_dir(parser, "evidence root holding cron-dry-run/ledger.jsonl")
    add_dry_run_start(parser, "the ledger's first run")
    parser.add_argument(
        "--target",
        default=None,
        help="count only this cron URL's runs (default: the latest remote run's)",
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        start = dry_run_start_option(args, "cron-dryrun gate")
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    path = audit_dir_option(args) / LEDGER_RELPATH
    read = read_ledger(path)
    status = assess(
        read.entries, start, datetime.now(UTC), target=args.target, problems=read.problems
    )
    if args.json:
        print(json.dumps(status.to_json(), indent=2, sort_keys=True))
    else:
        print(f"dry run ({path}): {status.describe()}")
        for problem in read.problems[1:]:
            print(f"  also: {problem}")
        if status.manual_fallback_note:
            print(f"warning: {status.manual_fallback_note}")
        print(f"counted: complete runs against {status.target or 'no target (empty ledger)'}")
        if status.not_counted:
            print(
                f"  not counted: {status.not_counted} partial or interrupted run(s) of that target"
            )
        others = {k: v for k, v in targets_in(read.entries).items() if k != status.target}
        for other, (runs, counting) in others.items():
            why = "" if counting else " (local stack, partial or interrupted: never counted)"
            print(f"  other target in the ledger: {other}: {runs} run(s){why}")
    return 0 if status.complete else 1
