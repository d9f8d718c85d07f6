"""The runbook's last step: archive the counted runs' artefacts, then note it in the plan.

Pure parts (which files belong to the counted runs, the status bullet, where it goes in
``memorybank/daily_usage_alignment_plan.md``) are functions of their inputs; ``write_archive``
is the only I/O: a tar.gz written to a temp name and linked into place (never replacing an
archive), with its ``.sha256``. The artefacts are archived as they are on disk (the writer
redacted them when it wrote them); the archive's bytes are never rewritten.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cron_dryrun.errors import CronDryrunError
from cron_dryrun.evidence.ledger import LedgerEntry, short_time
from cron_dryrun.evidence.manifests import BLOCK_SEPARATOR, CHAIN_SEPARATOR, SIGNATURE_SUFFIX
from cron_dryrun.evidence.paths import (
    DRY_RUN_DIR,
    LEDGER_RELPATH,
    MANIFEST_DIR,
    SUMMARY_RELPATH,
    notes_relpath,
    stamp,
)

PLAN_SECTION = "### 2. Ingestion Window & Scheduling"
_MANIFEST_LINE = re.compile(r"^[0-9a-fA-F]{64} [ *](?P<path>.+)$")
_HEADING = re.compile(r"^#{1,3}\s")


class ArchiveError(CronDryrunError, RuntimeError):
    """The archive (or the plan update) was refused; the message says why and what to do."""


def archive_relpath(first: datetime, last: datetime) -> str:
    return f"{DRY_RUN_DIR}/archive-{stamp(first)}-{stamp(last)}.tar.gz"


def manifests_of_run(manifest_names: Iterable[str], run_at: datetime) -> list[str]:
    """The manifests a run wrote: ``<stamp>[-n].sha256`` and its report's ``report-<stamp>``."""
    s = stamp(run_at)
    own = re.compile(rf"(?:report-)?{re.escape(s)}(?:-\d+)?\.sha256")
    return sorted(n for n in manifest_names if own.fullmatch(n))


def listed_paths(manifest_text: str) -> list[str]:
    """The files a manifest lists; its blocks (``#run=``) and chain head (``#chain=``) are parts
    of the ledger, summary and notes, which are archived whole."""
    paths = [m.group("path") for m in map(_MANIFEST_LINE.match, manifest_text.splitlines()) if m]
    return [p for p in paths if BLOCK_SEPARATOR not in p and CHAIN_SEPARATOR not in p]


def archive_members(
    counted: Sequence[datetime],
    manifests: dict[str, str],
    existing: set[str],
) -> list[str]:
    """Every file of the counted runs, relative to the audit folder, sorted.

    ``manifests``: name -> text of each ``manifests/*.sha256``; ``existing``: the audit
    folder's files. Per counted run: its manifests, the files they list and the ``.sha256``
    beside each; then the ledger, summary.md and each counted day's notes. A counted run
    without a manifest is refused: its artefacts cannot be told apart or checked.
    """
    members: set[str] = set()
    for run_at in counted:
        names = manifests_of_run(manifests, run_at)
        if not names:
            raise ArchiveError(
                f"the counted run at {short_time(run_at)} has no manifest "
                f"({MANIFEST_DIR}/{stamp(run_at)}.sha256): its artefacts cannot be archived; "
                "was this audit folder copied without manifests/?"
            )
        for name in names:
            members.add(f"{MANIFEST_DIR}/{name}")
            if f"{MANIFEST_DIR}/{name}{SIGNATURE_SUFFIX}" in existing:
                members.add(f"{MANIFEST_DIR}/{name}{SIGNATURE_SUFFIX}")
            for rel in listed_paths(manifests[name]):
                members.add(rel)
                if f"{rel}.sha256" in existing:
                    members.add(f"{rel}.sha256")
        notes = notes_relpath(run_at)
        if notes in existing:
            members.add(notes)
    members.update(p for p in (LEDGER_RELPATH, SUMMARY_RELPATH) if p in existing)
    return sorted(members)


def status_bullet(
    today: str,
    target: str,
    runs: Sequence[LedgerEntry],
    archive_path: str,
    digest: str,
    parity: str,
) -> str:
    """The plan's dated status bullet (contract.md section 7.1's format)."""
    listed = ", ".join(f"{short_time(r.time)} {r.verdict}" for r in runs)
    return (
        f"  - Status {today} (cron dry run): 48-hour staging dry run complete against {target} "
        f"(runs {listed}; {parity}); artefacts archived "
        f"({archive_path}, SHA256 {digest})"
    )


@dataclass(frozen=True)
class PlanEdit:
    text: str  # the whole plan with the bullet inserted
    line_number: int  # 1-based line of the inserted bullet
    confidence_line: tuple[int, str] | None  # (1-based number, text) of the line to edit


def insert_status(plan: str, bullet: str, section: str = PLAN_SECTION) -> PlanEdit:
    """``plan`` with ``bullet`` after the section's last status bullet (or at its end); nothing
    else changes. Raises ArchiveError naming the section when the plan lacks it."""
    newline = "\r\n" if "\r\n" in plan else "\n"
    lines = plan.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == section), None)
    if start is None:
        raise ArchiveError(
            f"the plan has no section {section!r}: add that heading (the cron's section) or "
            "pass the right file with --memorybank; the plan was not changed"
        )
    end = next(
        (i for i in range(start + 1, len(lines)) if _HEADING.match(lines[i])),
        len(lines),
    )
    last_content = start
    last_status = None
    for i in range(start + 1, end):
        stripped = lines[i].strip()
        if stripped:
            last_content = i
        if stripped.startswith("- Status "):
            last_status = i
    insert_after = last_content
    if last_status is not None:
        indent = len(lines[last_status]) - len(lines[last_status].lstrip())
        insert_after = last_status
        for i in range(last_status + 1, end):  # the status bullet's own continuation lines
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) > indent:
                insert_after = i
            else:
                break
    if not lines[insert_after].endswith(("\n", "\r")):
        lines[insert_after] += newline
    lines.insert(insert_after + 1, bullet + newline)
    confidence = None
    for i in range(start + 1, end + 1):
        if "confidence" in lines[i].lower():
            confidence = (i + 1, lines[i].rstrip("\r\n"))
            break
    return PlanEdit("".join(lines), insert_after + 2, confidence)


def write_archive(audit_dir: Path, relpath: str, members: Sequence[str]) -> tuple[Path, str]:
    """The tar.gz of ``members`` (paths inside it relative to the audit folder) and its
    ``.sha256``; refuses to replace an existing archive. Returns (path, sha256 hex)."""
    target = audit_dir / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise ArchiveError(f"{target} already exists: these runs were archived before")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            for rel in members:
                tar.add(audit_dir / rel, arcname=rel, recursive=False)
        with open(tmp, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, target)  # fails rather than replace an archive written meanwhile
        except FileExistsError:
            raise ArchiveError(
                f"{target} already exists: these runs were archived before"
            ) from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    sums = target.with_name(target.name + ".sha256")
    sums.write_text(f"{digest}  {target.name}\n", encoding="utf-8")
    return target, digest
