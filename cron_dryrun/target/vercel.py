"""Vercel's edge as the suite meets it on staging: Deployment Protection, told apart from the app.

Pure: judges a recorded transcript, no I/O. Deployment Protection (Vercel
Authentication, password, trusted IPs) answers before the app runs: a 401/403 or a
redirect to a login page, with an HTML body, never the app's JSON (contract.md
section 8). Automation passes it with ``x-vercel-protection-bypass: <secret>``, the
secret the project exposes as ``VERCEL_AUTOMATION_BYPASS_SECRET``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cron_dryrun.target.transcript import Transcript

BYPASS_HEADER = "x-vercel-protection-bypass"
BYPASS_ENV = "VERCEL_AUTOMATION_BYPASS_SECRET"
PROTECTION_BLOCKED = "blocked by Vercel Deployment Protection before reaching the app"
BLOCKED = (
    f"{PROTECTION_BLOCKED}: "
    f"set {BYPASS_ENV} (the project's Protection Bypass for Automation secret)"
)
BLOCKED_DESPITE_BYPASS = (
    f"{PROTECTION_BLOCKED}, although "
    f"{BYPASS_HEADER} was sent: set {BYPASS_ENV} to the project's current Protection Bypass "
    "for Automation secret (it may have been regenerated)"
)


def _is_json(t: Transcript) -> bool:
    if "json" in t.content_type.lower():
        return True
    return t.response_body.lstrip()[:1] in (b"{", b"[")


def _edge_signs(t: Transcript) -> list[str]:
    """What marks an answer as the edge's rather than the app's."""
    signs = []
    cookies = " ".join(v for k, v in t.response_headers if k.lower() == "set-cookie")
    if "_vercel_sso" in cookies:
        signs.append("a _vercel_sso cookie")
    location = (t.header("location") or "").lower()
    if "vercel.com" in location and ("sso" in location or "login" in location):
        signs.append(f"a redirect to {t.header('location')}")
    body = t.response_body.lstrip()[:2048].lower()
    if "html" in t.content_type.lower() or body.startswith((b"<!doctype", b"<html")):
        signs.append("an HTML body")
    if b"vercel authentication" in body or b"authentication required" in body:
        signs.append("Vercel's login page")
    return signs


def protection_block(t: Transcript) -> str | None:
    """The message when ``t`` is Deployment Protection's answer (401/403/3xx, no JSON); else None."""
    if t.status is None or not (t.status in (401, 403) or 300 <= t.status < 400):
        return None
    if _is_json(t):
        return None  # the app's own answer, e.g. 401 {"error":"Unauthorized"}
    signs = _edge_signs(t)
    if not signs:
        return None
    sent = any(k.lower() == BYPASS_HEADER for k, _ in t.request_headers)
    message = BLOCKED_DESPITE_BYPASS if sent else BLOCKED
    return f"{message} (status {t.status} {t.reason}, {', '.join(signs)}, no JSON)"
