"""Bounds on what a hostile endpoint can make the suite hold: JSON depth, attachment size.

Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from cron_dryrun.errors import CronDryrunError

MAX_JSON_DEPTH = 64  # the cron's answer nests 3 deep; 64 leaves room and no recursion risk
MAX_ATTACHMENT_CHARS = 200_000  # one attachment of the HTML report, one report line
_MARGIN = 4096  # longer than any secret: what a transform sees past the cut
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JsonTooDeep(CronDryrunError, ValueError):
    """A JSON document nests deeper than the bound: refused before the parser recurses."""


def json_depth_exceeds(text: str, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when ``text`` opens more than ``max_depth`` arrays/objects at once (strings skipped).

    Linear and without recursion: strings are dropped by one regex, then the brackets left
    are counted; a document with fewer brackets than the bound is not scanned.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return False
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = 0
    for ch in brackets:
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                return True
        else:
            depth -= 1
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def loads_bounded(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that raises ``ValueError`` (never ``RecursionError``) on a document
    nested deeper than ``max_depth``, and on NaN/Infinity."""
    if json_depth_exceeds(text, max_depth):
        raise JsonTooDeep(
            f"JSON nested deeper than {max_depth} levels: refused unparsed (a JSON bomb?)"
        )
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise JsonTooDeep(f"JSON nested too deep to parse (bound {max_depth})") from None


def truncated(
    text: str, limit: int = MAX_ATTACHMENT_CHARS, transform: Callable[[str], str] | None = None
) -> str:
    """``text`` cut to ``limit`` characters, saying how much was cut; unchanged when it fits.

    ``transform`` (a redactor) is applied before the cut, to a margin past it, so that a
    secret across the cut is removed whole rather than left half visible.
    """
    apply = transform or (lambda t: t)
    if len(text) <= limit:
        return apply(text)
    # a secret across the cut: redacted whole in the margin, and the margin kept when no
    # transform was given (the caller redacts later, whole secrets still in view)
    head = apply(text[: limit + _MARGIN])
    head = head[:limit] if transform else head
    cut = len(text) - (limit if transform else limit + _MARGIN)
    return (
        f"{head}\n[truncated by cron-dryrun: {cut:,} of {len(text):,} characters cut "
        f"(bound {limit:,}); the smoke log holds the exchange]"
    )


def word_excerpt(text: str, limit: int, more: bool = False) -> str:
    """``text`` cut to at most ``limit`` characters, never inside a word, " ..." marking a cut
    (also when ``more``: the text itself was already cut). One word longer than ``limit`` is
    cut where it must be."""
    if len(text) <= limit and not more:
        return text
    head = text[:limit]
    if len(text) > limit and text[limit].isalnum() and head[-1:].isalnum():
        head = re.sub(r"\w+$", "", head) or head  # back to the start of the word cut
    return head.rstrip() + " ..."
