"""Serve an ASGI app with uvicorn in a background thread, on 127.0.0.1 and an ephemeral port.

Readiness is signalled by the server itself (an Event set right after uvicorn's
startup has bound its sockets), so nothing sleeps and guesses; the port is read
from the bound socket, so nothing races for a "free" port.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from cron_dryrun.errors import CronDryrunError

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 15.0
GRACEFUL_SHUTDOWN_S = 1.0


class ServerStartError(CronDryrunError, RuntimeError):
    pass


class _Server(uvicorn.Server):
    """uvicorn.Server that tells another thread when its sockets are listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # False when startup failed (uvicorn then exits)
            self.ready.set()


class RunningServer:
    """A started server: ``url`` is its base URL; ``stop`` shuts it down (idempotent)."""

    def __init__(
        self, server: _Server, thread: threading.Thread, port: int, scheme: str = "http"
    ) -> None:
        self._server = server
        self._thread = thread
        self.port = port
        self.url = f"{scheme}://{LOOPBACK}:{port}"

    def signal_stop(self) -> None:
        """Ask the server to stop without waiting: several servers then wind down in parallel."""
        self._server.should_exit = True

    def stop(self, timeout_s: float = GRACEFUL_SHUTDOWN_S + 5.0) -> None:
        self.signal_stop()
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # graceful shutdown overran: cut open connections
            self._server.force_exit = True
            self._thread.join(timeout_s)


def start_server(
    app: Any,
    *,
    name: str,
    ready_timeout_s: float = READY_TIMEOUT_S,
    ssl_certfile: Path | None = None,
) -> RunningServer:
    """Start ``app`` on loopback; return once it accepts connections, or raise ServerStartError.

    ``ssl_certfile``: a PEM holding the key and the certificate chain: https instead of http.
    """
    config = uvicorn.Config(
        app,
        host=LOOPBACK,
        port=0,
        lifespan="off",
        log_config=None,  # leave the process's logging alone (we may run inside pytest)
        log_level="warning",
        access_log=False,
        # typed int, but uvicorn hands it to asyncio.wait_for, which takes seconds as a float
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,  # type: ignore[arg-type]
        timeout_keep_alive=2,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, name=f"standin-{name}", daemon=True)
    thread.start()
    # Event.wait in short slices, so a thread that died during startup is noticed at once.
    deadline = time.monotonic() + ready_timeout_s
    while not server.ready.wait(0.05):
        if not thread.is_alive() or time.monotonic() >= deadline:
            server.should_exit = True
            thread.join(5.0)
            raise ServerStartError(
                f"the {name} server did not start on {LOOPBACK} within {ready_timeout_s:.0f}s"
            )
    port = int(server.servers[0].sockets[0].getsockname()[1])
    return RunningServer(server, thread, port, "https" if ssl_certfile else "http")


@contextlib.contextmanager
def serving(app: Any, *, name: str, ssl_certfile: Path | None = None) -> Iterator[RunningServer]:
    """``start_server`` as a context manager: the server always stops on exit."""
    running = start_server(app, name=name, ssl_certfile=ssl_certfile)
    try:
        yield running
    finally:
        running.stop()
