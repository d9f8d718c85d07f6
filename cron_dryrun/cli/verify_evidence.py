"""``cron-dryrun verify-evidence``: check every manifest's SHA-256 sums under the audit folder.

Exit 0 with a count when every listed file is present and unchanged; 1 naming
each changed or missing file (or when there is nothing to verify).
"""

from __future__ import annotations

import argparse
import sys

from cron_dryrun.cli.options import add_audit_dir, audit_dir_option
from cron_dryrun.evidence import check_manifests


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify-evidence",
        help="check the audit folder's manifests (SHA-256 of each run's artefacts)",
        description="Check audit/manifests/*.sha256: every listed file must exist and be unchanged.",
    )
    add_audit_dir(parser, "evidence root")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    audit_dir = audit_dir_option(args)
    if not audit_dir.is_dir():
        print(f"verify-evidence: {audit_dir} is not a directory (--audit-dir)", file=sys.stderr)
        return 2
    result = check_manifests(audit_dir)
    if result.problems:
        for problem in result.problems:
            print(f"verify-evidence: {problem}", file=sys.stderr)
        print(
            f"verify-evidence: FAILED: {len(result.problems)} problem(s) in {result.manifests} "
            f"manifest(s) under {audit_dir}",
            file=sys.stderr,
        )
        return 1
    print(
        f"verify-evidence: OK: {result.files} file(s) in {result.manifests} manifest(s) unchanged under {audit_dir}"
    )
    return 0
