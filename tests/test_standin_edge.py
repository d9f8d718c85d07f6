"""The stand-in of Vercel's edge: compression as Accept-Encoding allows, Deployment Protection."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import brotli
import httpx
import pytest
import zstandard

from cron_dryrun.standin._asgi import Receive, Scope, Send, respond_json
from cron_dryrun.standin.edge import VercelEdge, accepted_codings
from cron_dryrun.standin.server import serving

PAYLOAD = {"success": True, "telemetry": {"windowsProcessed": 8}}
DECODE = {
    "gzip": gzip.decompress,
    "br": brotli.decompress,
    "zstd": lambda data: zstandard.ZstdDecompressor().decompress(data),
}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await respond_json(send, 200, PAYLOAD)


@pytest.fixture
def edge_url(request: pytest.FixtureRequest) -> Iterator[str]:
    with serving(VercelEdge(app, **request.param), name="edge") as server:
        yield server.url + "/api/cron/daily-usage"


def get_raw(url: str, accept_encoding: str) -> tuple[httpx.Headers, bytes]:
    with (
        httpx.Client(timeout=5) as client,
        client.stream("GET", url, headers={"Accept-Encoding": accept_encoding}) as response,
    ):
        return response.headers, b"".join(response.iter_raw())


@pytest.mark.parametrize(
    ("edge_url", "coding"),
    [({"compress": c}, c) for c in ("gzip", "br", "zstd")],
    indirect=["edge_url"],
)
def test_answers_compressed_when_the_request_accepts_it(edge_url: str, coding: str) -> None:
    headers, raw = get_raw(edge_url, "gzip, deflate, br, zstd")
    assert headers["content-encoding"] == coding and headers["vary"] == "Accept-Encoding"
    assert int(headers["content-length"]) == len(raw)
    assert json.loads(DECODE[coding](raw)) == PAYLOAD


@pytest.mark.parametrize("edge_url", [{"compress": "br"}], indirect=True)
def test_answers_plain_when_the_request_does_not_accept_the_coding(edge_url: str) -> None:
    headers, raw = get_raw(edge_url, "gzip, br;q=0")
    assert "content-encoding" not in headers
    assert json.loads(raw) == PAYLOAD


def test_accept_encoding_parsing() -> None:
    assert accepted_codings("gzip, deflate, br;q=0, zstd;q=0.5") == {"gzip", "deflate", "zstd"}
    assert accepted_codings(None) == set()


@pytest.mark.parametrize("edge_url", [{"bypass_secret": "edge-bypass-1234"}], indirect=True)
def test_protection_answers_the_login_page_unless_the_bypass_is_sent(edge_url: str) -> None:
    with httpx.Client(timeout=5) as client:
        blocked = client.get(edge_url)
        wrong = client.get(edge_url, headers={"x-vercel-protection-bypass": "nope"})
        by_header = client.get(edge_url, headers={"x-vercel-protection-bypass": "edge-bypass-1234"})
        by_query = client.get(edge_url, params={"x-vercel-protection-bypass": "edge-bypass-1234"})
    for refused in (blocked, wrong):
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("text/html")
        assert "_vercel_sso_nonce=" in refused.headers["set-cookie"]
        assert "Authentication Required" in refused.text
    assert by_header.json() == PAYLOAD and by_query.json() == PAYLOAD
