"""``cron-dryrun gate``: where the 48-hour dry run stands, read from the ledger.

Only the suite's own lines count (``evidence.trust``): in the chain, listed by a manifest
that verifies, and signed with ``CRON_DRYRUN_EVIDENCE_KEY`` under ``--require-signed``.
Every other line is named with why. Exit 0 only when the dry run is complete; 1 when it
is not; 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from cron_dryrun.cli.options import (
    add_audit_dir,
    add_dry_run_start,
    audit_dir_option,
    dry_run_start_option,
)
from cron_dryrun.errors import ExitCode, SettingsError
from cron_dryrun.evidence import LEDGER_RELPATH
from cron_dryrun.evidence.chain import EVIDENCE_KEY_VARIABLE
from cron_dryrun.evidence.ledger import (
    DRY_RUN_RULE,
    assess,
    latest_target,
    normalise_target,
    targets_in,
)
from cron_dryrun.evidence.trust import evidence_key, judge_ledger


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gate",
        help="where the 48-hour dry run stands (exit 0 only when complete)",
        description=(
            "Read audit/cron-dry-run/ledger.jsonl and say where the 48-hour dry run stands. "
            f"The dry run is {DRY_RUN_RULE}. Only lines the suite wrote count: in the ledger's "
            "hash chain, listed by their run's manifest, which verifies (and signed with "
            f"{EVIDENCE_KEY_VARIABLE} under --require-signed); every other line is named with why."
        ),
    )
    add_audit_dir(parser, "evidence root holding cron-dry-run/ledger.jsonl")
    add_dry_run_start(parser, "the ledger's first run")
    parser.add_argument(
        "--target",
        default=None,
        help="count only this cron URL's runs (default: the latest remote run's)",
    )
    parser.add_argument(
        "--require-signed",
        action="store_true",
        help=(
            f"count only lines and manifests whose HMAC signature verifies with "
            f"{EVIDENCE_KEY_VARIABLE} (environment only): runs made by the workflow or by an "
            "operator given the key"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    start = dry_run_start_option(args)
    key = evidence_key()
    if args.require_signed and key is None:
        raise SettingsError(
            f"--require-signed needs {EVIDENCE_KEY_VARIABLE} in the environment "
            "(the key the runs were signed with; never a command-line argument)"
        )
    audit_dir = audit_dir_option(args)
    path = audit_dir / LEDGER_RELPATH
    trust = judge_ledger(audit_dir, key=key, require_signed=args.require_signed)
    target = args.target or latest_target(trust.entries)  # a forged line still names one
    status = assess(trust.counted, start, datetime.now(UTC), target=target, problems=trust.problems)
    uncounted = [
        u for u in trust.uncounted if status.target and normalise_target(u.target) == status.target
    ]
    if args.json:
        doc = status.to_json()
        doc["uncounted_lines"] = [u.to_json() for u in uncounted]
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(f"dry run ({path}): {status.describe()}")
        for problem in trust.problems[1:]:
            print(f"  also: {problem}")
        if status.manual_fallback_note:
            print(f"warning: {status.manual_fallback_note}")
        print(f"counted: complete runs against {status.target or 'no target (empty ledger)'}")
        if status.not_counted:
            print(
                f"  not counted: {status.not_counted} partial or interrupted run(s) of that target"
            )
        for line in uncounted:
            print(f"  not counted: {line.describe()}")
        others = {k: v for k, v in targets_in(trust.entries).items() if k != status.target}
        for other, (runs, counting) in others.items():
            why = "" if counting else " (local stack, partial or interrupted: never counted)"
            print(f"  other target in the ledger: {other}: {runs} run(s){why}")
    return ExitCode.OK if status.complete else ExitCode.FAIL
