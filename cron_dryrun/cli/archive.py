"""``cron-dryrun archive``: the runbook's last step, once the 48-hour dry run is complete.

    cron-dryrun archive --audit-dir audit --memorybank memorybank/daily_usage_alignment_plan.md

Refuses unless ``verify-evidence`` passes and the ledger is complete for the target; then
writes ``cron-dry-run/archive-<first-run>-<last-run>.tar.gz`` and its ``.sha256``, and with
``--memorybank`` appends a dated status bullet under the plan's cron section (nothing else
in the plan changes) and prints the confidence line for the operator to edit.

Exit status: 0 archived; 1 refused (evidence, ledger, plan); 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from cron_dryrun.cli.options import (
    add_audit_dir,
    add_dry_run_start,
    audit_dir_option,
    dry_run_start_option,
)
from cron_dryrun.errors import ExitCode, SettingsError
from cron_dryrun.evidence import MANIFEST_DIR
from cron_dryrun.evidence.archive import (
    PLAN_SECTION,
    ArchiveError,
    archive_members,
    archive_relpath,
    insert_status,
    status_bullet,
    write_archive,
)
from cron_dryrun.evidence.ledger import assess, latest_target
from cron_dryrun.evidence.trust import check_evidence, evidence_key, judge_ledger


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "archive",
        help="archive the complete dry run's artefacts (tar.gz + .sha256); note it in the plan",
        description=(
            "Once verify-evidence passes and the 48-hour ledger is complete: write "
            "cron-dry-run/archive-<first-run>-<last-run>.tar.gz with every artefact of the "
            "counted runs (manifests included) and its .sha256; with --memorybank, append a "
            f"dated status bullet under {PLAN_SECTION!r} of the plan."
        ),
    )
    add_audit_dir(parser, "evidence root")
    parser.add_argument(
        "--memorybank",
        type=Path,
        default=None,
        help="memorybank/daily_usage_alignment_plan.md: append the status bullet there",
    )
    add_dry_run_start(parser, "the ledger's first run")
    parser.add_argument(
        "--target", default=None, help="the target whose runs count (default: the latest run's)"
    )
    parser.set_defaults(func=run)


def _refuse(message: str) -> int:
    print(f"archive: refused: {message}", file=sys.stderr)
    return ExitCode.FAIL


def run(args: argparse.Namespace) -> int:
    audit_dir = audit_dir_option(args)
    if not audit_dir.is_dir():
        raise SettingsError(f"{audit_dir} is not a directory (--audit-dir)")
    start = dry_run_start_option(args)

    key = evidence_key()
    check = check_evidence(audit_dir, key=key)  # the chain and signatures too
    if check.problems:
        for problem in check.problems:
            print(f"archive: verify-evidence: {problem}", file=sys.stderr)
        return _refuse(
            f"verify-evidence fails ({len(check.problems)} problem(s)): archive only evidence "
            "that is intact; run `cron-dryrun verify-evidence` and restore the named files"
        )
    read = judge_ledger(audit_dir, key=key)  # only the suite's own lines count, as in `gate`
    target = args.target or latest_target(read.entries)
    status = assess(read.counted, start, datetime.now(UTC), target=target, problems=read.problems)
    if not status.complete:
        return _refuse(
            f"the 48-hour dry run is not complete for {status.target or 'any target'}: "
            f"{status.describe()}"
        )
    counted = [e for e in read.counted if e.target == status.target and e.time in status.counted]

    plan_text = None
    if args.memorybank is not None:
        try:
            plan_text = Path(args.memorybank).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return _refuse(f"--memorybank {args.memorybank}: {exc}")
        try:
            insert_status(plan_text, "  - Status (check)")  # the section is there: checked first
        except ArchiveError as exc:
            return _refuse(f"--memorybank {args.memorybank}: {exc}")

    folder = audit_dir / MANIFEST_DIR
    manifests = {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.sha256"))}
    existing = {p.relative_to(audit_dir).as_posix() for p in audit_dir.rglob("*") if p.is_file()}
    relpath = archive_relpath(status.counted[0], status.counted[-1])
    try:
        members = archive_members(status.counted, manifests, existing)
        _, digest = write_archive(audit_dir, relpath, members)
    except ArchiveError as exc:
        return _refuse(str(exc))
    shown = (audit_dir / relpath).as_posix()
    print(f"archive: {len(members)} file(s) of {len(counted)} counted run(s) -> {shown}")
    print(f"archive: sha256 {digest} ({shown}.sha256)")

    if args.memorybank is not None and plan_text is not None:
        failed = [c for e in counted for c in e.failed_checks]
        parity = "parity passed on every counted run" if "parity" not in failed else "parity failed"
        bullet = status_bullet(
            datetime.now(UTC).date().isoformat(),
            status.target or "",
            counted,
            shown,
            digest,
            parity,
        )
        edit = insert_status(plan_text, bullet)
        _replace_text(Path(args.memorybank), edit.text)
        print(f"{args.memorybank}:{edit.line_number}: added: {bullet.strip()}")
        if edit.confidence_line is not None:
            number, text = edit.confidence_line
            print(
                f"{args.memorybank}:{number}: raising the confidence is your decision; "
                f"the line to edit: {text.strip()}"
            )
        else:
            print(f"{args.memorybank}: no confidence line under {PLAN_SECTION!r} to edit")
    return ExitCode.OK


def _replace_text(path: Path, text: str) -> None:
    """Atomic replace keeping the file's mode: a reader never sees half a plan."""
    tmp = path.with_name(f".{path.name}.cron-dryrun.tmp")
    tmp.write_bytes(text.encode("utf-8"))
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)
