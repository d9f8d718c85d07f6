"""The ledger's hash chain and the evidence signatures. Pure: bytes in, verdicts out.

The chain (think git's commit chain, or a certificate-transparency log): every ledger
line carries ``prev``, the SHA-256 of the exact line before it (the first line: of the
empty string), so a deleted, inserted, reordered or edited line breaks the links after
it. Each run's manifest records the chain head after its line (its line's SHA-256 and
position), so the break is named by position and run.

Signatures: with a key (``CRON_DRYRUN_EVIDENCE_KEY``), a ledger line carries ``sig``, an
HMAC-SHA256 over its own bytes without the ``sig`` field (the line as the suite serialises
it: sorted keys, UTF-8), and a manifest has ``<manifest>.sig``, an HMAC-SHA256 over the
manifest's exact bytes. A signature is ``{"alg": ..., "key": ..., "value": ...}``; ``alg``
leaves room for other schemes (a Sigstore bundle) without changing the line's shape. The
chain catches edits and deletions; only a signature stops someone who can write the
folder from rebuilding all of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EVIDENCE_KEY_VARIABLE = "CRON_DRYRUN_EVIDENCE_KEY"
PREV_FIELD = "prev"
SIG_FIELD = "sig"
HMAC_ALG = "hmac-sha256"
GENESIS = hashlib.sha256(b"").hexdigest()  # what the first line's ``prev`` holds


def line_hash(line: str) -> str:
    """SHA-256 of one ledger line's bytes (UTF-8, without its newline)."""
    return hashlib.sha256(line.encode("utf-8", "surrogateescape")).hexdigest()


def serialise(obj: Mapping[str, Any]) -> str:
    """The ledger's one-line JSON form (sorted keys, UTF-8 as is): what is hashed and signed."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)


def key_id(key: str) -> str:
    """A short, public name of a key (never the key): tells which key signed, for rotation."""
    return hashlib.sha256(b"cron-dryrun evidence key\0" + key.encode("utf-8")).hexdigest()[:12]


def sign(key: str, data: bytes) -> dict[str, str]:
    """The signature object of ``data`` with ``key``."""
    value = hmac.new(key.encode("utf-8"), data, hashlib.sha256).hexdigest()
    return {"alg": HMAC_ALG, "key": key_id(key), "value": value}


def signature_problem(signature: object, data: bytes, key: str) -> str | None:
    """None when ``signature`` is ``key``'s HMAC of ``data``; else why not, in a few words."""
    if not isinstance(signature, Mapping):
        return "not signed"
    if signature.get("alg") != HMAC_ALG:
        return f"signed with {signature.get('alg')!r}, which this version cannot check"
    if signature.get("key") != key_id(key):
        return (
            f"signed with key {signature.get('key')}, not with {EVIDENCE_KEY_VARIABLE} "
            f"(key {key_id(key)})"
        )
    expected = sign(key, data)["value"]
    if not hmac.compare_digest(expected, str(signature.get("value", ""))):
        return "signature does not verify"
    return None


def unsigned_payload(obj: Mapping[str, Any]) -> bytes:
    """The bytes a line's ``sig`` covers: the line's JSON without ``sig``."""
    return serialise({k: v for k, v in obj.items() if k != SIG_FIELD}).encode("utf-8")


def chained_line(obj: Mapping[str, Any], previous_line: str | None, key: str | None) -> str:
    """``obj`` as the next ledger line after ``previous_line`` (None: the first): with ``prev``,
    and with ``sig`` when there is a key. ``obj`` is already redacted."""
    linked = {k: v for k, v in obj.items() if k not in (PREV_FIELD, SIG_FIELD)}
    linked[PREV_FIELD] = GENESIS if previous_line is None else line_hash(previous_line)
    if key:
        linked[SIG_FIELD] = sign(key, unsigned_payload(linked))
    return serialise(linked)


def ledger_lines(text: str) -> list[str]:
    """The ledger's lines as the chain sees them: every non-empty line, exact bytes, no newline."""
    return [line for line in text.split("\n") if line.strip()]


@dataclass(frozen=True)
class Link:
    """One ledger line in the chain walk. ``position`` counts from 1 (non-empty lines)."""

    position: int
    line: str
    hash: str
    data: Mapping[str, Any] | None  # the parsed line; None when it is not a JSON object
    in_chain: bool
    why_not: str = ""  # when not in the chain, in the gate's words

    @property
    def run_id(self) -> str:
        value = self.data.get("run_id") if self.data is not None else None
        return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class ChainWalk:
    links: tuple[Link, ...]
    problems: tuple[str, ...]  # each names a line by its position
    broken_at: int | None  # the first line that does not follow the one before it

    @property
    def head(self) -> str:
        return self.links[-1].hash if self.links else GENESIS


def _parse(line: str) -> Mapping[str, Any] | None:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data if isinstance(data, Mapping) else None


def walk(lines: Sequence[str]) -> ChainWalk:
    """Follow ``prev`` from the first line. A line is in the chain when it carries ``prev``
    and it, and every chained line before it, follows the line before it. Lines without
    ``prev`` (written before the chain existed, or by hand) are never in it; one after a
    chained line is an insertion. Everything after a break is out of the chain."""
    links: list[Link] = []
    problems: list[str] = []
    broken_at: int | None = None
    chained_before = False
    previous: str | None = None
    for position, line in enumerate(lines, start=1):
        data = _parse(line)
        digest = line_hash(line)
        expected = GENESIS if previous is None else line_hash(previous)
        prev = data.get(PREV_FIELD) if data is not None else None
        previous = line
        if not isinstance(prev, str):
            why = "not in the chain: the line has no chain hash (written by hand, or before the chain)"
            if chained_before and broken_at is None:
                broken_at = position
                problems.append(
                    f"ledger line {position}: inserted (it carries no chain hash and follows "
                    "chained lines)"
                )
            links.append(Link(position, line, digest, data, False, why))
            continue
        chained_before = True
        if broken_at is not None:
            why = f"not in the chain: it comes after the break at line {broken_at}"
            links.append(Link(position, line, digest, data, False, why))
            continue
        if prev != expected:
            broken_at = position
            before = (
                "it is the first line but does not start the chain (lines before it were deleted?)"
                if position == 1
                else f"it does not follow line {position - 1}: a line was deleted, inserted or "
                f"reordered before it, or line {position - 1} was edited"
            )
            problems.append(f"ledger line {position}: {before}")
            why = f"not in the chain: the chain breaks at line {position}"
            links.append(Link(position, line, digest, data, False, why))
            continue
        links.append(Link(position, line, digest, data, True))
    return ChainWalk(tuple(links), tuple(problems), broken_at)
