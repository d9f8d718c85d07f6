"""HTTP content codings (gzip, deflate, br, zstd) decoded with a bound on the decoded size.

Pure: bytes in, bytes out, no I/O. Vercel's CDN compresses the cron's JSON whenever
the request's Accept-Encoding allows it (contract.md section 8), so the client reads
the raw body (bounded) and decodes it here. A body that would decode past the bound
is cut there and reported as an error, never allowed to fill memory.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import brotli
import zstandard

from cron_dryrun.errors import CronDryrunError

# What the client offers; every coding listed here is decoded below.
ACCEPT_ENCODING = "gzip, deflate, br, zstd"
SUPPORTED = ("gzip", "x-gzip", "deflate", "br", "zstd", "identity")
_STEP = 64 * 1024  # decoded bytes asked for at a time


class DecodeError(CronDryrunError, ValueError):
    """The body could not be decoded; the message names the coding and why."""


class TooLarge(DecodeError):
    """The decoded body would exceed the bound; ``partial`` is what was decoded up to it."""

    def __init__(self, message: str, partial: bytes) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class Decoded:
    """The body as the application sent it, with the sizes and codings it crossed the wire in."""

    body: bytes
    codings: tuple[str, ...]  # as listed in Content-Encoding, outermost last
    raw_size: int
    error: str | None = None
    cut: bool = False  # the decoded body stops at the bound

    @property
    def decoded_size(self) -> int:
        return len(self.body)


def parse_content_encoding(value: str | None) -> tuple[str, ...]:
    """``"gzip, br"`` -> ("gzip", "br"): the codings in the order they were applied."""
    if not value:
        return ()
    return tuple(c.strip().lower() for c in value.split(",") if c.strip())


def _too_large(coding: str, limit: int, partial: bytes) -> TooLarge:
    return TooLarge(f"the {coding} body decodes to more than {limit} bytes", partial[:limit])


def _zlib(data: bytes, wbits: int, coding: str, limit: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = bytearray()
    pending = data
    while True:
        out += d.decompress(pending, _STEP)
        if len(out) > limit:
            raise _too_large(coding, limit, bytes(out))
        pending = d.unconsumed_tail
        if not pending:
            break
    out += d.flush()
    if len(out) > limit:
        raise _too_large(coding, limit, bytes(out))
    if not d.eof:
        raise DecodeError(f"the {coding} body ends before its stream does (truncated)")
    return bytes(out)


def _gzip(data: bytes, limit: int) -> bytes:
    try:
        return _zlib(data, 16 + zlib.MAX_WBITS, "gzip", limit)
    except zlib.error as exc:
        raise DecodeError(f"the gzip body is not valid gzip: {exc}") from None


def _deflate(data: bytes, limit: int) -> bytes:
    # RFC 9110 deflate is the zlib format; some servers send a raw deflate stream instead.
    try:
        return _zlib(data, zlib.MAX_WBITS, "deflate", limit)
    except zlib.error:
        pass
    try:
        return _zlib(data, -zlib.MAX_WBITS, "deflate", limit)
    except zlib.error as exc:
        raise DecodeError(f"the deflate body is neither zlib nor raw deflate: {exc}") from None


def _brotli(data: bytes, limit: int) -> bytes:
    d = brotli.Decompressor()
    out = bytearray()
    try:
        out += d.process(data, output_buffer_limit=_STEP)
        while len(out) <= limit and not d.can_accept_more_data():
            out += d.process(b"", output_buffer_limit=_STEP)
    except brotli.error as exc:
        raise DecodeError(f"the br body is not valid brotli: {exc}") from None
    if len(out) > limit:
        raise _too_large("br", limit, bytes(out))
    if not d.is_finished():
        raise DecodeError("the br body ends before its stream does (truncated)")
    return bytes(out)


def _zstd(data: bytes, limit: int) -> bytes:
    out = bytearray()
    try:
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
            while chunk := reader.read(_STEP):
                out += chunk
                if len(out) > limit:
                    raise _too_large("zstd", limit, bytes(out))
    except zstandard.ZstdError as exc:
        raise DecodeError(f"the zstd body is not valid zstd: {exc}") from None
    return bytes(out)


def decode_once(coding: str, data: bytes, limit: int) -> bytes:
    """One coding removed; raises DecodeError (TooLarge past ``limit`` decoded bytes)."""
    if coding in ("gzip", "x-gzip"):
        return _gzip(data, limit)
    if coding == "deflate":
        return _deflate(data, limit)
    if coding == "br":
        return _brotli(data, limit)
    if coding == "zstd":
        return _zstd(data, limit)
    if coding == "identity":
        return data
    raise DecodeError(
        f"unsupported content-encoding {coding!r} (this client decodes {', '.join(SUPPORTED)})"
    )


def decode_body(raw: bytes, content_encoding: str | None, max_decoded: int) -> Decoded:
    """The body with every coding removed (last applied, first removed); errors are recorded."""
    codings = parse_content_encoding(content_encoding)
    body = raw
    try:
        for coding in reversed(codings):
            body = decode_once(coding, body, max_decoded)
    except TooLarge as exc:
        return Decoded(
            exc.partial,
            codings,
            len(raw),
            f"{exc} ({len(raw)} bytes on the wire): a decompression bomb or an oversized answer; "
            "decoding stopped there",
            cut=True,
        )
    except DecodeError as exc:
        return Decoded(raw, codings, len(raw), f"{exc}; the body below is shown as received")
    return Decoded(body, codings, len(raw))
