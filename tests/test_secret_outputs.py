"""Issue 24, the pure parts: excerpts redacted before they are cut, the short-secret warning
written around the secret, and the DSN rules (both forms) checked before libpq sees a DSN."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cron_dryrun.redaction import REDACTED, Redactor, derived_variants, redacted_excerpt
from cron_dryrun.rules.checks import BODY_EXCERPT, describe_answer
from cron_dryrun.target.client import Transcript

SECRET = "Cut-Test-Secret-8c2d4e6f-AB"
BYPASS = "Bypass-Secret-Value-3e9d1c7b"
STARTED = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


def runs_of(value: str, n: int = 8) -> set[str]:
    """Every n-character run of ``value`` (the leak a cut leaves behind)."""
    return {value[i : i + n] for i in range(len(value) - n + 1)}


def pieces_left(text: str, values: list[str]) -> list[str]:
    lowered = text.lower()
    return sorted({run for v in values for run in runs_of(v) if run.lower() in lowered})


def echoing_answer(body: str, *, secrets: tuple[str, ...] = (), headers=()) -> Transcript:  # type: ignore[no-untyped-def]
    return Transcript(
        label="auth",
        method="POST",
        url="http://127.0.0.1:1/api/cron/daily-usage",
        request_headers=tuple(headers),
        request_body=b"",
        started_at=STARTED,
        status=500,
        reason="Internal Server Error",
        response_headers=(("content-type", "text/plain"),),
        response_body=body.encode(),
        secrets=secrets,
    )


# -- 1. redact, then cut --------------------------------------------------------------------------


@pytest.mark.parametrize("offset", range(BODY_EXCERPT - 30, BODY_EXCERPT + 2, 3))
@pytest.mark.parametrize(
    "quoted",
    [SECRET, *sorted(derived_variants(SECRET))],
    ids=lambda v: "secret" if v == SECRET else f"near miss {len(v)}",
)
def test_a_secret_across_the_excerpts_cut_leaves_no_8_character_piece(
    offset: int, quoted: str
) -> None:
    body = "f" * offset + quoted + " trailing text"
    described = describe_answer(echoing_answer(body, secrets=(SECRET,)))
    assert described.startswith("status 500 Internal Server Error, content type text/plain")
    assert pieces_left(described, [SECRET, *derived_variants(SECRET)]) == []


@pytest.mark.parametrize("offset", [BODY_EXCERPT - 20, BODY_EXCERPT - 8, BODY_EXCERPT - 1])
def test_the_bypass_secret_header_is_not_left_half_visible_by_the_cut(offset: int) -> None:
    # the client's secrets unknown here (hand-built transcript): the header sent is enough
    t = echoing_answer(
        "f" * offset + BYPASS + " and more text after it" * 3,
        headers=[("x-vercel-protection-bypass", BYPASS), ("Authorization", "Bearer undefined")],
    )
    described = describe_answer(t)
    assert pieces_left(described, [BYPASS]) == []
    assert described.endswith(" ...")


def test_a_short_probe_the_request_sent_stays_readable_in_the_answer() -> None:
    t = echoing_answer("invalid token undefined", headers=[("Authorization", "Bearer undefined")])
    assert describe_answer(t).endswith("body: invalid token undefined")


def test_the_cut_moves_before_a_marker_it_would_halve() -> None:
    redact = Redactor([SECRET]).redact
    for offset in range(90, 101):
        text = "a" * offset + SECRET + "b" * 50
        cut, was_cut = redacted_excerpt(text, 100, redact)
        assert was_cut
        assert cut == "a" * offset + (REDACTED if offset + len(REDACTED) <= 100 else ""), offset
    assert redacted_excerpt("short", 100, redact) == ("short", False)
