"""A sleeping Neon compute on loopback: what a client meets while the compute wakes.

Neon's proxy always resolves and listens; while the compute starts, it accepts the connection
and answers the startup with an error ("the database system is starting up", SQLSTATE 57P03),
or holds it unanswered (``mode="slow"``, the client's connect timeout expires). ``wake(port)``
makes every later connection a plain TCP relay to a real server (PostgreSQL or PgBouncer), as
the woken compute answers. Real sockets and real libpq on the client side; only the proxy
is stood in, since Neon cannot exist here.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
STARTING = "the database system is starting up"


def error_response(message: str, code: str = "57P03") -> bytes:
    """A PostgreSQL ErrorResponse message (severity FATAL)."""
    body = b"".join(
        key + value.encode() + b"\0"
        for key, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    )
    body += b"\0"
    return b"E" + struct.pack("!i", len(body) + 4) + body


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _read_startup(conn: socket.socket) -> None:
    """Read the startup packet, refusing TLS and GSS encryption requests first (as a plain
    server does: the client's default sslmode=prefer then goes on in clear)."""
    while True:
        (length,) = struct.unpack("!i", _read_exact(conn, 4))
        rest = _read_exact(conn, length - 4)
        (code,) = struct.unpack("!i", rest[:4])
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            conn.sendall(b"N")
            continue
        return


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@dataclass
class SleepingCompute:
    port: int
    mode: str = "starting"  # or "slow": accept, then never answer
    upstream: int | None = None
    attempts: int = 0
    _listener: socket.socket | None = field(default=None, repr=False)
    _held: list[socket.socket] = field(default_factory=list, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def wake(self, upstream_port: int) -> None:
        """From now on, each connection reaches the real server on ``upstream_port``."""
        self.upstream = upstream_port

    def dsn(self, user: str = "postgres", dbname: str = "postgres", password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{user}{secret}@127.0.0.1:{self.port}/{dbname}"

    def _serve(self, conn: socket.socket) -> None:
        self.attempts += 1
        upstream = self.upstream
        if upstream is not None:
            try:
                far = socket.create_connection(("127.0.0.1", upstream), timeout=10)
            except OSError:
                conn.close()
                return
            far.settimeout(None)
            conn.settimeout(None)
            threading.Thread(target=_pipe, args=(far, conn), daemon=True).start()
            _pipe(conn, far)
            return
        try:
            conn.settimeout(10)
            _read_startup(conn)
            if self.mode == "slow":
                self._held.append(conn)  # accepted, never answered: the client times out
                return
            conn.sendall(error_response(STARTING))
        except (OSError, ConnectionError, struct.error):
            pass
        conn.close()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue  # wakes to see _stop (accept cannot be interrupted by close)
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()


@contextlib.contextmanager
def sleeping_compute(mode: str = "starting") -> Iterator[SleepingCompute]:
    """A compute that is asleep until ``wake``; stopped (and its sockets closed) on exit."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    compute = SleepingCompute(listener.getsockname()[1], mode, _listener=listener)
    thread = threading.Thread(target=compute._accept, daemon=True)
    thread.start()
    try:
        yield compute
    finally:
        compute._stop.set()
        thread.join(10)
        listener.close()
        for held in compute._held:
            held.close()
