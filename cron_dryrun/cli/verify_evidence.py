"""``cron-dryrun verify-evidence``: check the whole audit folder.

Every manifest's SHA-256 sums, the ledger's chain (a deleted, inserted, reordered or edited
line named by position), gate.json against its run's snapshot and, with
``CRON_DRYRUN_EVIDENCE_KEY`` in the environment, every signature. Exit 0 with a count
when all holds (warnings are printed, they do not fail it); 1 naming each problem (or
when there is nothing to verify); 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys

from cron_dryrun.cli.options import add_audit_dir, audit_dir_option
from cron_dryrun.errors import ExitCode, SettingsError
from cron_dryrun.evidence.chain import EVIDENCE_KEY_VARIABLE
from cron_dryrun.evidence.trust import check_evidence, evidence_key


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify-evidence",
        help="check the audit folder: manifests, the ledger's chain, gate.json, signatures",
        description=(
            "Check audit/manifests/*.sha256 (every listed file must exist and be unchanged), "
            "the ledger's hash chain, gate.json against its run's snapshot and, when "
            f"{EVIDENCE_KEY_VARIABLE} is set (environment only), every signature."
        ),
    )
    add_audit_dir(parser, "evidence root")
    parser.add_argument(
        "--require-signed",
        action="store_true",
        help=f"an unsigned manifest or ledger line is a problem (needs {EVIDENCE_KEY_VARIABLE})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    audit_dir = audit_dir_option(args)
    if not audit_dir.is_dir():
        raise SettingsError(f"{audit_dir} is not a directory (--audit-dir)")
    key = evidence_key()
    if args.require_signed and key is None:
        raise SettingsError(
            f"--require-signed needs {EVIDENCE_KEY_VARIABLE} in the environment "
            "(the key the runs were signed with; never a command-line argument)"
        )
    result = check_evidence(audit_dir, key=key, require_signed=args.require_signed)
    for warning in result.warnings:
        print(f"verify-evidence: warning: {warning}")
    if result.problems:
        for problem in result.problems:
            print(f"verify-evidence: {problem}", file=sys.stderr)
        print(
            f"verify-evidence: FAILED: {len(result.problems)} problem(s) in {result.manifests} "
            f"manifest(s) under {audit_dir}",
            file=sys.stderr,
        )
        return ExitCode.FAIL
    signed = " (signatures checked)" if key is not None else ""
    print(
        f"verify-evidence: OK: {result.files} file(s) in {result.manifests} manifest(s) "
        f"unchanged under {audit_dir}{signed}"
    )
    return ExitCode.OK
