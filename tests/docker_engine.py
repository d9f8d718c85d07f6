"""A Docker engine without images and without a registry, on a unix socket: what docker-py
meets on a machine whose engine cannot pull. Only the engine API calls a run makes before
it starts a container are answered (version, ping, image inspect, pull)."""

from __future__ import annotations

import contextlib
import json
import socketserver
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from loopback import served

NO_REGISTRY = (
    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host'
)


class _Engine(BaseHTTPRequestHandler):
    requests: list[str]

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path}")
        path = self.path.split("?", 1)[0]
        if path.endswith("/version"):
            self._answer(200, {"ApiVersion": "1.44", "Version": "25.0.0", "MinAPIVersion": "1.24"})
        elif path.endswith("/_ping"):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"OK")
        elif "/images/" in path and path.endswith("/json"):
            self._answer(404, {"message": "No such image"})
        else:
            self._answer(404, {"message": f"page not found: {path}"})

    def do_POST(self) -> None:
        self.requests.append(f"POST {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if "/images/create" in self.path:
            self._answer(500, {"message": NO_REGISTRY})
        else:
            self._answer(404, {"message": "not answered by this stand-in"})

    def address_string(self) -> str:  # a unix socket has no client address
        return "unix"

    def log_message(self, *args: object) -> None:
        return


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@contextlib.contextmanager
def engine_without_registry(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """``DOCKER_HOST`` of the engine, and the requests it received."""
    socket_path = folder / "docker.sock"
    requests: list[str] = []
    handler = type("Engine", (_Engine,), {"requests": requests})
    with served(_UnixServer(str(socket_path), handler)):
        yield f"unix://{socket_path}", requests
