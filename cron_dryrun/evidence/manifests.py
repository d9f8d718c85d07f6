"""SHA-256 manifests of a run's files and blocks, and ``verify-evidence``'s check of them
(and of gate.json against its per-run snapshot).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cron_dryrun.evidence.chain import sign, signature_problem
from cron_dryrun.evidence.paths import (
    DRY_RUN_DIR,
    GATE_RELPATH,
    LEDGER_RELPATH,
    MANIFEST_DIR,
    MUTABLE_RELPATHS,
    manifest_relpath,
)
from cron_dryrun.evidence.summary import ledger_line, run_block
from cron_dryrun.evidence.writer import EvidenceError, EvidenceWriter

# -- manifests ------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


BLOCK_SEPARATOR = "#run="
# ``<sha256>  cron-dry-run/ledger.jsonl#chain=<position>``: the chain head after this run's line
CHAIN_SEPARATOR = "#chain="
SIGNATURE_SUFFIX = ".sig"  # manifests/<run-id>.sha256.sig: HMAC of the manifest's exact bytes


def block_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(
    writer: EvidenceWriter,
    run_id: str,
    paths: Iterable[str | Path],
    blocks: Iterable[tuple[str, str]] = (),
    *,
    chain: tuple[int, str] | None = None,
    key: str | None = None,
) -> Path:
    """manifests/<run-id>.sha256 in sha256sum format, paths relative to the audit folder.

    Only a run's own, never-rewritten artefacts belong here (smoke log, diff
    JSON, dated report, ...); summary.md and friends change with every run.
    ``blocks``: (file, text) of what this run appended to such a file (summary
    entry, notes block, ledger line), listed as ``<sha256>  <file>#run=<run-id>``
    and found again by its run-id markers. An existing manifest is never
    replaced: a suffix is added. ``chain``: (position, SHA-256) of this run's ledger line,
    the chain head after it. ``key``: the manifest's exact bytes are signed into
    ``<manifest>.sig`` (``chain.sign``).
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_id):
        raise EvidenceError(f"run id {run_id!r}: expected letters, digits, '.', '_' or '-'")
    lines = []
    seen: set[str] = set()
    for item in paths:
        rel = writer.relpath(item)
        if rel in seen:
            continue
        seen.add(rel)
        if rel in MUTABLE_RELPATHS or re.fullmatch(rf"{DRY_RUN_DIR}/notes-[0-9-]+\.md", rel):
            raise EvidenceError(
                f"{rel} is rewritten by later runs, so a checksum of it would fail verify-evidence "
                "after the next run; list only this run's own artefacts"
            )
        path = writer.path(rel)
        if not path.is_file():
            raise EvidenceError(f"{rel}: cannot checksum a file that does not exist")
        digest = sha256_file(path)
        lines.append(f"{digest}  {rel}\n")
        # the team's convention: a .sha256 beside each archived artefact, `sha256sum -c` ready
        writer.write_text(f"{rel}.sha256", f"{digest}  {path.name}\n")
    for rel, text in blocks:
        lines.append(f"{block_digest(text)}  {rel}{BLOCK_SEPARATOR}{run_id}\n")
    if chain is not None:
        position, head = chain
        lines.append(f"{head}  {LEDGER_RELPATH}{CHAIN_SEPARATOR}{position}\n")
    manifest = writer.write_new(manifest_relpath(run_id), "".join(lines))
    if key:
        # over the bytes on disk (after redaction), so anyone with the key can check the file
        writer.write_json(
            writer.relpath(manifest) + SIGNATURE_SUFFIX, sign(key, manifest.read_bytes())
        )
    return manifest


@dataclass(frozen=True)
class ManifestCheck:
    manifests: int
    files: int
    problems: tuple[str, ...]
    warnings: tuple[str, ...] = ()  # files no manifest lists, outside the suite's own names


_MANIFEST_LINE = re.compile(r"^(?P<hex>[0-9a-fA-F]{64}) [ *](?P<path>.+)$")


@dataclass(frozen=True)
class OneManifest:
    """One manifest checked: its listed files and blocks, and what it records of the ledger."""

    files: int
    problems: tuple[str, ...]
    listed: frozenset[Path]
    blocks: tuple[tuple[str, str, str], ...]  # (file, run id, sha256) of each appended block
    chain: tuple[int, str] | None  # (position, sha256) of its ledger line: the chain head


def _check_manifest(audit_dir: Path, manifest: Path) -> OneManifest:
    name = f"{MANIFEST_DIR}/{manifest.name}"
    root = audit_dir.resolve()
    problems: list[str] = []
    listed: set[Path] = set()
    blocks: list[tuple[str, str, str]] = []
    chain: tuple[int, str] | None = None
    files = 0
    text = manifest.read_text(encoding="utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _MANIFEST_LINE.match(line)
        if m is None:
            problems.append(f"{name} line {number}: not a sha256sum line: {line[:80]!r}")
            continue
        rel = m.group("path")
        digest = m.group("hex").lower()
        file, sep, position = rel.partition(CHAIN_SEPARATOR)
        if sep and file == LEDGER_RELPATH and position.isdigit():
            chain = (int(position), digest)  # checked against the ledger's walk (evidence.trust)
            continue
        files += 1
        if BLOCK_SEPARATOR in rel:
            file, _, run_id = rel.partition(BLOCK_SEPARATOR)
            blocks.append((file, run_id, digest))
            problems.extend(_check_block(audit_dir, rel, digest, name))
            continue
        target = (audit_dir / rel).resolve()
        listed.add(target)
        if root not in target.parents:
            problems.append(f"{rel}: listed in {name} but outside the audit folder")
        elif not target.is_file():
            problems.append(f"{rel}: missing (listed in {name})")
        else:
            actual = sha256_file(target)
            if actual != digest:
                problems.append(
                    f"{rel}: changed (listed in {name}; sha256 expected {m.group('hex')[:12]}…, "
                    f"found {actual[:12]}…)"
                )
    return OneManifest(files, tuple(problems), frozenset(listed), tuple(blocks), chain)


def check_run_manifest(audit_dir: Path, run_id: str) -> OneManifest | None:
    """manifests/<run-id>.sha256 checked; None when the run has none."""
    path = Path(audit_dir) / manifest_relpath(run_id)
    if not path.is_file() or path.is_symlink():
        return None
    return _check_manifest(Path(audit_dir), path)


def manifest_signature_problem(manifest: Path, key: str) -> str | None:
    """None when ``<manifest>.sig`` is ``key``'s HMAC of the manifest's bytes; else why not."""
    sig = manifest.with_name(manifest.name + SIGNATURE_SUFFIX)
    if not sig.is_file():
        return "not signed"
    try:
        signature = json.loads(sig.read_text(encoding="utf-8"))
    except ValueError:
        return f"{sig.name} is not valid JSON"
    return signature_problem(signature, manifest.read_bytes(), key)


def check_manifests(audit_dir: Path) -> ManifestCheck:
    """Every manifests/*.sha256 under ``audit_dir`` checked; each problem names its file."""
    audit_dir = Path(audit_dir)
    folder = audit_dir / MANIFEST_DIR
    manifests = sorted(folder.glob("*.sha256")) if folder.is_dir() else []
    if not manifests:
        return ManifestCheck(0, 0, (f"no manifests in {folder}: nothing to verify",))
    problems: list[str] = []
    files = 0
    listed: set[Path] = set()  # checked through a manifest: its .sha256 beside it adds nothing
    for manifest in manifests:
        one = _check_manifest(audit_dir, manifest)
        files += one.files
        problems.extend(one.problems)
        listed |= one.listed
    root = audit_dir.resolve()
    beside_listed: set[Path] = set()  # archived with its .sha256 only, without the manifest
    for beside in sorted(audit_dir.rglob("*.sha256")):
        if beside.parent.resolve() == folder.resolve():
            continue  # the manifests themselves, checked above
        name = str(beside.relative_to(audit_dir))
        for line in beside.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _MANIFEST_LINE.match(line)
            if m is None:
                if line.strip():
                    problems.append(f"{name}: not a sha256sum line: {line[:80]!r}")
                continue
            target = beside.parent / m.group("path")
            if target.resolve() in listed:
                continue
            rel = (
                str(target.relative_to(audit_dir))
                if root in target.resolve().parents
                else m.group("path")
            )
            files += 1
            beside_listed.add(target.resolve())
            if not target.is_file():
                problems.append(f"{rel}: missing (listed in {name})")
            elif sha256_file(target) != m.group("hex").lower():
                problems.append(f"{rel}: changed (listed in {name})")
    problems.extend(_check_latest_gate(audit_dir, listed))
    owned, others = _unlisted(audit_dir, listed, beside_listed)
    problems.extend(owned)
    return ManifestCheck(len(manifests), files, tuple(problems), tuple(others))


def _check_block(audit_dir: Path, listed: str, digest: str, manifest: str) -> list[str]:
    """One appended block (summary entry, notes block, ledger line) against its checksum."""
    rel, _, run_id = listed.partition(BLOCK_SEPARATOR)
    path = audit_dir / rel
    what = f"{rel}: the block of run {run_id}"
    if not path.is_file() or path.is_symlink():
        return [f"{what}: {rel} missing (listed in {manifest})"]
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    find = ledger_line if rel.endswith(".jsonl") else run_block
    found = find(text, run_id)
    if found is None:
        return [f"{what}: missing (listed in {manifest})"]
    if block_digest(found) != digest:
        return [f"{what}: changed (listed in {manifest})"]
    return []


def gate_snapshot_relpath(run_id: str) -> str:
    return f"gate-{run_id}.json"


def _check_latest_gate(audit_dir: Path, listed: set[Path]) -> list[str]:
    """gate.json is the latest run's gate-<run-id>.json, byte for byte, and that snapshot is in
    its run's manifest: a hand-edited gate.json, one without a run id, or an older run's
    snapshot copied over it is a problem."""
    latest = audit_dir / GATE_RELPATH
    if not latest.is_file():
        return []
    try:
        run_id = json.loads(latest.read_text(encoding="utf-8")).get("run_id")
    except (ValueError, AttributeError):
        return [f"{GATE_RELPATH}: not valid JSON"]
    if not isinstance(run_id, str):
        return [
            f"{GATE_RELPATH}: no run id, so no run vouches for it (edited by hand, or written "
            "by an older version: the next dry run writes it again)"
        ]
    snapshot = audit_dir / gate_snapshot_relpath(run_id)
    if not snapshot.is_file():
        return [f"{GATE_RELPATH}: its run's snapshot {snapshot.name} is missing"]
    problems: list[str] = []
    if snapshot.read_bytes() != latest.read_bytes():
        problems.append(
            f"{GATE_RELPATH}: changed (it differs from {snapshot.name}, its run's snapshot)"
        )
    if snapshot.resolve() not in listed:
        problems.append(
            f"{GATE_RELPATH}: names run {run_id}, but no manifest lists {snapshot.name} "
            f"({manifest_relpath(run_id)} missing?)"
        )
    newest = _newest_snapshot(audit_dir, listed)
    if newest is not None and newest[1] != snapshot.name:
        problems.append(
            f"{GATE_RELPATH}: is {snapshot.name}, but {newest[1]} (run at {newest[0]}) is a later "
            "run's: gate.json must be the latest run's"
        )
    return problems


_SNAPSHOT = re.compile(r"gate-(?P<run>[A-Za-z0-9][A-Za-z0-9._-]*)\.json")


def _newest_snapshot(audit_dir: Path, listed: set[Path]) -> tuple[str, str] | None:
    """(run_at, name) of the latest run's snapshot among those a manifest lists."""
    found: list[tuple[str, str]] = []
    for path in audit_dir.glob("gate-*.json"):
        if not _SNAPSHOT.fullmatch(path.name) or path.resolve() not in listed:
            continue
        try:
            run_at = json.loads(path.read_text(encoding="utf-8")).get("run_at")
        except (ValueError, AttributeError):
            continue
        if isinstance(run_at, str):
            found.append((run_at, path.name))
    return max(found) if found else None


# Names only the suite writes: an unlisted file under one of them is a problem, not a warning.
_SUITE_OWNED = (
    re.compile(r"gate.*\.json"),
    re.compile(r"report.*\.html"),
    re.compile(rf"{MANIFEST_DIR}/.*"),
    re.compile(rf"{DRY_RUN_DIR}/ledger.*"),
)


def _unlisted(
    audit_dir: Path, listed: set[Path], beside_listed: set[Path]
) -> tuple[list[str], list[str]]:
    """Files no manifest lists: (problems for the suite's own names, warnings for the rest).
    Files later runs rewrite (summary.md, notes, gate.json, ...), manifests, their signatures
    and checksum files beside listed artefacts are the suite's bookkeeping, not unlisted. A
    .sha256 beside a file vouches for an operator's archived copy, never for a suite name."""
    problems: list[str] = []
    warnings: list[str] = []
    for path in sorted(audit_dir.rglob("*")):
        rel = path.relative_to(audit_dir).as_posix()
        if any(part.startswith(".") for part in path.relative_to(audit_dir).parts):
            continue  # .git of the evidence branch's worktree, the writer's temp files
        if path.is_dir() and not path.is_symlink():
            continue
        if path.resolve() in listed or rel in MUTABLE_RELPATHS:
            continue
        owned = any(pattern.fullmatch(rel) for pattern in _SUITE_OWNED)
        if path.resolve() in beside_listed and not owned:
            continue
        if re.fullmatch(rf"{DRY_RUN_DIR}/notes-[0-9-]+\.md", rel):
            continue
        if re.fullmatch(rf"{MANIFEST_DIR}/[^/]+\.sha256", rel):
            continue
        if rel.endswith(SIGNATURE_SUFFIX) and (audit_dir / rel[: -len(SIGNATURE_SUFFIX)]).is_file():
            continue
        if rel.endswith(".sha256") and (audit_dir / rel[: -len(".sha256")]).resolve() in (
            listed | beside_listed
        ):
            continue
        if owned:
            problems.append(f"{rel}: not written by any run (no manifest lists it)")
        else:
            warnings.append(f"{rel}: not written by any run (no manifest lists it)")
    return problems, warnings


def verify_manifests(audit_dir: Path) -> list[str]:
    """The problems of ``check_manifests``: empty when every listed file is present and unchanged."""
    return list(check_manifests(audit_dir).problems)
