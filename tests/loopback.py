"""Test servers on loopback, answering from a thread for the length of a ``with`` block."""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator
from typing import TypeVar

Server = TypeVar("Server", bound=socketserver.BaseServer)


@contextlib.contextmanager
def served(server: Server) -> Iterator[Server]:
    """``server`` answering until the block ends; then shut down, closed and its thread gone."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
