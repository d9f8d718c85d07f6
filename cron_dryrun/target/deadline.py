"""A wall-clock deadline over a whole HTTP exchange: connect, TLS, headers and body.

httpx's timeouts are per operation: a server that sends one header line a second never
trips a 3 s read timeout. This network backend gives every socket operation only the
time left until one deadline, so the exchange as a whole cannot outlive it.
"""

from __future__ import annotations

import ssl
import time
import typing
from typing import Any

import httpcore
import httpx


def _left(deadline: float, timeout: float | None, error: type[Exception]) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the exchange's wall-clock deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(self._deadline, timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(self._deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._stream.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, every operation bounded by the time left to ``deadline``
    (a ``time.monotonic()`` value)."""

    def __init__(self, deadline: float) -> None:
        self._backend = httpcore.SyncBackend()
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, left, local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(self._deadline, timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._backend.connect_unix_socket(path, left, socket_options), self._deadline
        )

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def deadline_transport(deadline: float, **kwargs: Any) -> httpx.HTTPTransport:
    """An ``httpx.HTTPTransport`` (``kwargs`` as its own) whose connections all end by
    ``deadline``."""
    transport = httpx.HTTPTransport(**kwargs)
    pool = transport._pool
    if not hasattr(pool, "_network_backend"):  # pragma: no cover - httpcore changed
        raise RuntimeError("httpcore's ConnectionPool has no _network_backend to bound")
    pool._network_backend = DeadlineBackend(deadline)
    return transport
