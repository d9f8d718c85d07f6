"""The little ASGI plumbing both stand-in apps share (no framework, on purpose: two routes each)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Sequence[tuple[str, str]]


def header(scope: Scope, name: str) -> str | None:
    """The first value of a request header (case-insensitive), decoded as latin-1 like HTTP."""
    wanted = name.lower().encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


def query(scope: Scope) -> dict[str, list[str]]:
    return parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"), keep_blank_values=True)


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    *,
    content_type: str | None = None,
    headers: Headers = (),
    head: bool = False,
) -> None:
    """One complete response; ``head`` sends the headers without the body, as HEAD must."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    if content_type:
        raw.append((b"content-type", content_type.encode("latin-1")))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def respond_json(
    send: Send, status: int, payload: Any, *, headers: Headers = (), head: bool = False
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await respond(send, status, body, content_type="application/json", headers=headers, head=head)


async def lifespan(receive: Receive, send: Send) -> None:
    """Answer lifespan events so the apps also run under servers that send them."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def handled_outside_http(scope: Scope, receive: Receive, send: Send) -> bool:
    """Lifespan and other non-HTTP scopes, the same for both apps; True when handled here."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return True
    return bool(scope["type"] != "http")
