"""Content codings the CDN may answer in, decoded with a bound on the decoded size."""

from __future__ import annotations

import gzip
import json
import zlib

import brotli
import pytest
import zstandard

from cron_dryrun.target.content_coding import decode_body, parse_content_encoding

BODY = json.dumps({"success": True, "telemetry": {"windowsProcessed": 8}}).encode() * 20

ENCODERS = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_each_coding_decodes_to_the_body_with_both_sizes(coding: str) -> None:
    raw = ENCODERS[coding](BODY)
    decoded = decode_body(raw, coding, max_decoded=1_000_000)
    assert decoded.error is None
    assert decoded.body == BODY
    assert decoded.raw_size == len(raw) < decoded.decoded_size == len(BODY)
    assert decoded.codings == (coding,)


def test_raw_deflate_stream_is_accepted_too() -> None:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = c.compress(BODY) + c.flush()
    assert decode_body(raw, "deflate", 1_000_000).body == BODY


def test_stacked_codings_are_removed_last_applied_first() -> None:
    raw = brotli.compress(gzip.compress(BODY))
    decoded = decode_body(raw, "gzip, br", 1_000_000)
    assert decoded.error is None and decoded.body == BODY


def test_no_or_identity_coding_leaves_the_body_as_it_is() -> None:
    assert decode_body(BODY, None, 10).body == BODY  # no coding: the raw bound applies alone
    assert decode_body(BODY, "identity", 10).body == BODY
    assert parse_content_encoding(" GZIP , br ") == ("gzip", "br")


@pytest.mark.parametrize("coding", sorted(ENCODERS))
def test_a_decompression_bomb_stops_at_the_bound(coding: str) -> None:
    bomb = ENCODERS[coding](b"\0" * 50_000_000)  # 50 MB of zeros: a few KB on the wire
    assert len(bomb) < 100_000
    decoded = decode_body(bomb, coding, max_decoded=1_000_000)
    assert decoded.cut
    assert decoded.decoded_size == 1_000_000
    assert decoded.error == (
        f"the {coding} body decodes to more than 1000000 bytes ({len(bomb)} bytes on the wire): "
        "a decompression bomb or an oversized answer; decoding stopped there"
    )


def test_corrupt_and_truncated_bodies_are_named() -> None:
    corrupt = decode_body(b"not gzip at all", "gzip", 1000)
    assert corrupt.error is not None
    assert corrupt.error.startswith("the gzip body is not valid gzip:")
    assert corrupt.body == b"not gzip at all"  # shown as received
    cut = decode_body(brotli.compress(BODY)[:-5], "br", 1_000_000)
    assert cut.error == (
        "the br body ends before its stream does (truncated); the body below is shown as received"
    )


def test_an_unknown_coding_is_named_with_what_is_supported() -> None:
    decoded = decode_body(b"x", "compress", 1000)
    assert decoded.error == (
        "unsupported content-encoding 'compress' (this client decodes gzip, x-gzip, deflate, br, "
        "zstd, identity); the body below is shown as received"
    )
