"""Vercel's edge in front of the stand-in cron: compression and Deployment Protection.

contract.md section 8: the CDN compresses responses (br, gzip) whenever the request's
Accept-Encoding allows it, and Deployment Protection answers an automated request
without ``x-vercel-protection-bypass`` with a 401 HTML page before the app runs.
``VercelEdge`` wraps any ASGI app and does both, so the suite meets on loopback
what it will meet on staging.
"""

from __future__ import annotations

import gzip
import hmac
import secrets
from collections.abc import Callable
from typing import Any

import brotli
import zstandard

from cron_dryrun.standin._asgi import Message, Receive, Scope, Send, header, query, respond

COMPRESSIONS = ("none", "gzip", "br", "zstd")
BYPASS_HEADER = "x-vercel-protection-bypass"

_COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, mtime=0),
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}

# What Vercel Authentication answers a request that has neither an SSO cookie nor the bypass.
LOGIN_PAGE = (
    b"<!doctype html><html lang=en><head><meta charset=utf-8>"
    b"<title>Authentication Required</title></head><body>"
    b"<p>Authentication Required</p><p>Vercel Authentication is enabled for this deployment. "
    b'<a href="https://vercel.com/sso-api">Log in</a> to continue.</p></body></html>'
)


def accepted_codings(accept_encoding: str | None) -> set[str]:
    """The codings an Accept-Encoding value allows (q > 0); ``*`` stands for any."""
    allowed: set[str] = set()
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > 0:
            allowed.add(name)
    return allowed


class VercelEdge:
    """ASGI middleware: protection first (as at Vercel's edge), then compression of the answer.

    ``compress``: "gzip", "br" or "zstd" when the request accepts it; "none" never.
    ``bypass_secret``: when set, Deployment Protection is on and only requests carrying
    it (header or query parameter ``x-vercel-protection-bypass``) reach the app.
    """

    def __init__(self, app: Any, *, compress: str = "none", bypass_secret: str | None = None):
        if compress not in COMPRESSIONS:
            raise ValueError(f"compress must be one of {', '.join(COMPRESSIONS)}, got {compress!r}")
        self.app = app
        self.compress = compress
        self.bypass_secret = bypass_secret

    def _bypassed(self, scope: Scope) -> bool:
        assert self.bypass_secret is not None
        given = header(scope, BYPASS_HEADER) or (query(scope).get(BYPASS_HEADER) or [""])[0]
        return hmac.compare_digest(given.encode(), self.bypass_secret.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.bypass_secret is not None and not self._bypassed(scope):
            await respond(
                send,
                401,
                LOGIN_PAGE,
                content_type="text/html; charset=utf-8",
                headers=[
                    ("server", "Vercel"),
                    ("cache-control", "no-store, max-age=0"),
                    (
                        "set-cookie",
                        f"_vercel_sso_nonce={secrets.token_urlsafe(12)}; Path=/; "
                        "Max-Age=3600; Secure; HttpOnly; SameSite=Lax",
                    ),
                    ("x-robots-tag", "noindex"),
                ],
                head=scope["method"] == "HEAD",
            )
            return
        coding = self.compress
        if coding == "none" or coding not in accepted_codings(header(scope, "accept-encoding")):
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _compressing(send, coding))


def _compressing(send: Send, coding: str) -> Send:
    """A ``send`` that buffers the body, then sends it compressed with the headers fixed up."""
    start: Message | None = None
    body = bytearray()

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        body.extend(message.get("body", b""))
        if message.get("more_body", False):
            return
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        payload = bytes(body)
        if payload:
            payload = _COMPRESSORS[coding](payload)
            headers.append((b"content-encoding", coding.encode()))
        headers.append((b"vary", b"Accept-Encoding"))
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return wrapped
