"""The exchanges as ``curl -i`` shows them: the smoke log's text. Pure; transcripts are
duck-typed (``target.client.Transcript``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cron_dryrun.evidence.paths import iso_z

if TYPE_CHECKING:
    from cron_dryrun.target.client import Transcript


# -- curl -i style transcripts --------------------------------------------------------------------


def _request_target(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return target, parts.netloc.rsplit("@", 1)[-1]


def format_transcripts(transcripts: Iterable[Transcript]) -> str:
    """The exchanges as ``curl -v``/``-i`` shows them, each under a ``### <label>`` marker line."""
    blocks: list[str] = []
    for t in transcripts:
        target, host = _request_target(t.url)
        lines = [
            f"### {t.label}",
            f"# {t.method} {t.url} at {iso_z(t.started_at)}, {t.elapsed_s:.3f}s",
            f"> {t.method} {target} {t.http_version or 'HTTP/1.1'}",
        ]
        if not any(k.lower() == "host" for k, _ in t.request_headers):
            lines.append(f"> Host: {host}")
        lines.extend(f"> {k}: {v}" for k, v in t.request_headers)
        lines.append(">")
        if t.request_body:
            lines.append(t.request_body.decode("utf-8", "replace"))
        if t.status is None:
            lines.append(f"! transport error, no response: {t.error or 'unknown'}")
        else:
            lines.append(f"< {t.http_version or 'HTTP/1.1'} {t.status} {t.reason}".rstrip())
            lines.extend(f"< {k}: {v}" for k, v in t.response_headers)
            lines.append("<")
            lines.append(f"# body: {t.body_sizes}")
            body = t.response_body.decode("utf-8", "replace")
            lines.append(body.rstrip("\n") if body else "(empty body)")
            if t.body_truncated or t.error:
                lines.append(f"! {t.error or 'body truncated'}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)
