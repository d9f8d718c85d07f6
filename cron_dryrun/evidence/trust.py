"""Which ledger lines count, and ``verify-evidence``'s check of the chain and the signatures.

A ledger line counts toward the 48-hour dry run only when the suite wrote it:

- it is in the chain (``evidence.chain.walk``);
- it names a run id, and that run's manifest (manifests/<run-id>.sha256) exists, verifies
  (every file and block it lists is unchanged) and lists this very line;
- with a key (``CRON_DRYRUN_EVIDENCE_KEY``), the line's signature and its manifest's verify
  when present; ``require_signed``: they must be present.

Every other line is named with its position and why (``Uncounted``). ``record_run`` is the
one way a run's line and manifest are written, so what the gate counts is what it wrote.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cron_dryrun.config.options import read_option
from cron_dryrun.evidence.chain import (
    EVIDENCE_KEY_VARIABLE,
    SIG_FIELD,
    ChainWalk,
    ledger_lines,
    line_hash,
    signature_problem,
    unsigned_payload,
    walk,
)
from cron_dryrun.evidence.ledger import LedgerEntry, append_entry
from cron_dryrun.evidence.manifests import (
    SIGNATURE_SUFFIX,
    OneManifest,
    check_manifests,
    check_run_manifest,
    manifest_signature_problem,
    write_manifest,
)
from cron_dryrun.evidence.paths import LEDGER_RELPATH, MANIFEST_DIR, manifest_relpath
from cron_dryrun.evidence.writer import EvidenceWriter

NO_KEY = (
    f"{EVIDENCE_KEY_VARIABLE} is not set: export the evidence key (environment only) to check "
    "signatures"
)


def evidence_key(env: Mapping[str, str] | None = None) -> str | None:
    """The signing key from the environment (never a command-line argument); None when unset.
    Read through the settings table's environment-only row, as given."""
    key: str | None = read_option("evidence_key", None, os.environ if env is None else env)
    return key


def record_run(
    writer: EvidenceWriter,
    entry: LedgerEntry,
    own: Iterable[str | Path] = (),
    blocks: Iterable[tuple[str, str]] = (),
    *,
    key: str | None = None,
) -> Path:
    """Append ``entry`` to the ledger, chained (and signed with ``key``), after writing its run's
    manifest: ``own`` files, ``blocks`` appended elsewhere, the ledger line and the chain head.
    Both happen under the ledger's lock; when the manifest cannot be written, the line is not
    appended (the error is raised). Returns the manifest's path."""
    if not entry.run_id:
        raise ValueError("a recorded run needs a run id: its manifest is named after it")
    written: list[Path] = []

    def manifest(line: str, position: int) -> None:
        written.append(
            write_manifest(
                writer,
                entry.run_id,
                own,
                [*blocks, (LEDGER_RELPATH, line)],
                chain=(position, line_hash(line)),
                key=key,
            )
        )

    append_entry(writer, entry, key=key, before_append=manifest)
    return written[0]


@dataclass(frozen=True)
class Uncounted:
    """A ledger line the gate did not count, and why (in the gate's words)."""

    position: int
    run_id: str
    target: str
    time: str
    verdict: str
    reason: str

    def describe(self) -> str:
        run = f"run {self.run_id}" if self.run_id else "no run id"
        return f"line {self.position} ({run}, {self.time or '?'}, {self.verdict or '?'}): {self.reason}"

    def to_json(self) -> dict[str, object]:
        return {
            "line": self.position,
            "run_id": self.run_id or None,
            "time": self.time or None,
            "verdict": self.verdict or None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class LedgerTrust:
    entries: tuple[LedgerEntry, ...]  # every line that parses, counted or not
    counted: tuple[LedgerEntry, ...]  # the suite's own lines: what the rules may count
    uncounted: tuple[Uncounted, ...]
    problems: tuple[str, ...]  # corrupt lines and breaks in the chain: they block completion
    walk: ChainWalk


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    # bytes as they are (no newline translation): the chain hashes exact lines
    return ledger_lines(path.read_bytes().decode("utf-8", "surrogateescape"))


def _line_reason(
    audit_dir: Path,
    run_id: str,
    data: Mapping[str, object],
    digest: str,
    key: str | None,
    require_signed: bool,
    manifests: dict[str, OneManifest | None],
) -> str | None:
    """Why a chained line with this run id does not count; None when it counts."""
    if run_id not in manifests:
        manifests[run_id] = check_run_manifest(audit_dir, run_id)
    manifest = manifests[run_id]
    name = manifest_relpath(run_id)
    if manifest is None:
        return f"no manifest for run {run_id} ({name} is missing)"
    if manifest.problems:
        return f"the manifest of run {run_id} does not verify: {manifest.problems[0]}"
    listed = [d for file, rid, d in manifest.blocks if file == LEDGER_RELPATH and rid == run_id]
    if not listed:
        return f"{name} lists no ledger line: not written by the suite's run {run_id}"
    if digest not in listed:
        return f"{name} does not list this line (it lists another line of run {run_id})"
    if require_signed and key is None:
        return f"not checked: {NO_KEY}"
    if key is not None:
        if SIG_FIELD in data or require_signed:
            why = signature_problem(data.get(SIG_FIELD), unsigned_payload(data), key)
            if why is not None:
                return f"line {why}" if why.startswith("signature") else why
        why = manifest_signature_problem(audit_dir / name, key)
        if why is not None and (why != "not signed" or require_signed):
            return f"the manifest of run {run_id}: {why}"
    return None


def judge_ledger(
    audit_dir: Path, *, key: str | None = None, require_signed: bool = False
) -> LedgerTrust:
    """Every ledger line under ``audit_dir``: counted, or named with why not (module docstring)."""
    audit_dir = Path(audit_dir)
    path = audit_dir / LEDGER_RELPATH
    chain = walk(_read_lines(path))
    entries: list[LedgerEntry] = []
    counted: list[LedgerEntry] = []
    uncounted: list[Uncounted] = []
    problems: list[str] = []
    manifests: dict[str, OneManifest | None] = {}
    for link in chain.links:
        try:
            entry = LedgerEntry.from_json(link.data if link.data is not None else [])  # type: ignore[arg-type]
        except ValueError as exc:
            problems.append(f"{path} line {link.position}: corrupt ledger entry ({exc})")
            continue
        entries.append(entry)
        if not link.in_chain:
            reason: str | None = link.why_not
        elif not entry.run_id:
            reason = "no run id: not written by the suite"
        else:
            assert link.data is not None
            reason = _line_reason(
                audit_dir, entry.run_id, link.data, link.hash, key, require_signed, manifests
            )
        if reason is None:
            counted.append(entry)
        else:
            time = link.data.get("time") if link.data is not None else None
            uncounted.append(
                Uncounted(
                    link.position,
                    entry.run_id,
                    entry.target,
                    str(time or ""),
                    entry.verdict,
                    reason,
                )
            )
    problems.extend(f"{path}: {p}" for p in chain.problems)
    return LedgerTrust(tuple(entries), tuple(counted), tuple(uncounted), tuple(problems), chain)


# -- verify-evidence ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceCheck:
    manifests: int
    files: int
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def _run_id_of(manifest: Path) -> str:
    return manifest.name.removesuffix(".sha256")


def check_evidence(
    audit_dir: Path, *, key: str | None = None, require_signed: bool = False
) -> EvidenceCheck:
    """``check_manifests`` plus the ledger's chain (each break, deletion, insertion, move or edit
    named by line) and, with ``key``, every signature."""
    audit_dir = Path(audit_dir)
    base = check_manifests(audit_dir)
    problems = list(base.problems)
    warnings = list(base.warnings)
    lines = _read_lines(audit_dir / LEDGER_RELPATH)
    chain = walk(lines)
    problems.extend(chain.problems)
    by_hash: dict[str, int] = {link.hash: link.position for link in chain.links}
    recorded: set[str] = set()
    named: set[int] = set()  # positions a manifest already named (edited): said once
    folder = audit_dir / MANIFEST_DIR
    manifests = sorted(folder.glob("*.sha256")) if folder.is_dir() else []
    for manifest in manifests:
        run_id = _run_id_of(manifest)
        one = check_run_manifest(audit_dir, run_id)
        if one is not None and one.chain is not None:
            position, digest = one.chain
            recorded.add(digest)
            found = by_hash.get(digest)
            at = chain.links[position - 1] if 0 < position <= len(chain.links) else None
            if found is None and at is not None and at.run_id == run_id:
                named.add(position)
                problems.append(
                    f"ledger line {position} (run {run_id}): edited (its manifest "
                    f"{MANIFEST_DIR}/{manifest.name} records another SHA-256)"
                )
            elif found is None:
                problems.append(
                    f"ledger line {position} (run {run_id}): deleted ({MANIFEST_DIR}/"
                    f"{manifest.name} records it; no line of the ledger has its SHA-256)"
                )
            elif found != position:
                problems.append(
                    f"ledger line {found} (run {run_id}): moved from line {position} (lines "
                    "before it were deleted, inserted or reordered)"
                )
        if key is not None:
            why = manifest_signature_problem(manifest, key)
            if why == "not signed" and not require_signed:
                warnings.append(f"{MANIFEST_DIR}/{manifest.name}: not signed")
            elif why is not None:
                problems.append(f"{MANIFEST_DIR}/{manifest.name}: {why}")
    for link in chain.links:
        if not link.in_chain and chain.broken_at is None:
            warnings.append(f"ledger line {link.position}: {link.why_not}")
        elif link.in_chain and link.hash not in recorded and link.position not in named:
            message = (
                f"ledger line {link.position}: no manifest records it in the chain "
                "(not written by any run)"
            )
            # a red line whose run could not write its manifest (a full disk) can never help a
            # promotion: said, not failed on, or one bad day would fail every later check
            red = link.data is not None and link.data.get("verdict") == "NO-GO"
            (warnings if red else problems).append(message)
        if key is not None and link.data is not None and link.in_chain:
            sig = link.data.get(SIG_FIELD)
            if sig is None and not require_signed:
                warnings.append(f"ledger line {link.position}: not signed")
                continue
            why = signature_problem(sig, unsigned_payload(link.data), key)
            if why is not None:
                problems.append(f"ledger line {link.position}: {why}")
    if require_signed and key is None:
        problems.append(f"signatures not checked: {NO_KEY}")
    return EvidenceCheck(base.manifests, base.files, tuple(problems), tuple(warnings))


__all__ = [
    "NO_KEY",
    "SIGNATURE_SUFFIX",
    "EvidenceCheck",
    "LedgerTrust",
    "Uncounted",
    "check_evidence",
    "evidence_key",
    "judge_ledger",
    "record_run",
]
