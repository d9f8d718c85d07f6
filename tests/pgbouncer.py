"""A real PgBouncer in transaction mode on loopback, in front of a test PostgreSQL (Neon's pooler).

Debian's `pgbouncer` (`apt-get install pgbouncer`); it refuses to run as root, so as
root it runs as `nobody`, like the embedded PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from cron_dryrun.target.embedded import UNPRIVILEGED_USER, _demote, free_port
from cron_dryrun.target.pg_server import wait_until_accepting


@dataclass(frozen=True)
class Pooler:
    port: int
    log: Path

    def dsn_for(self, direct_dsn: str) -> str:
        """The same database, user and password as ``direct_dsn``, through the pooler."""
        parts = urlsplit(direct_dsn)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return f"{parts.scheme}://{userinfo}127.0.0.1:{self.port}{parts.path}"


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").is_file() else None
    )
    if found is None:
        pytest.skip("PgBouncer is not installed (apt-get install pgbouncer)")
    return found


def _wait_listening(port: int, alive: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # bounded by the deadline above
    raise RuntimeError(f"PgBouncer did not listen on 127.0.0.1:{port} within {timeout_s:g}s")


@contextlib.contextmanager
def start_pgbouncer(
    server_dsn: str, port: int | None = None, wait: bool = True, pool_mode: str = "transaction"
) -> Iterator[Pooler]:
    """PgBouncer (``pool_mode``: transaction as Neon's pooler, or statement; trust auth) on
    127.0.0.1:``port`` for every database."""
    binary = pgbouncer_binary()
    server = urlsplit(server_dsn)
    query = dict(parse_qsl(server.query))
    # a TCP server, or a socket directory (the pgserver wheel's DSN: ...@/postgres?host=/tmp/x)
    server_host = server.hostname or query.get("host", "127.0.0.1")
    server_port = server.port or int(query.get("port", "5432"))
    port = port or free_port()
    root = Path(tempfile.mkdtemp(prefix="cron-dryrun-pgbouncer-"))
    demote, uid, gid = _demote(UNPRIVILEGED_USER)
    users = root / "users.txt"
    users.write_text('"postgres" ""\n"pooled_reader" ""\n"matrix_operator" ""\n')
    ini = root / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={server_host} port={server_port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {users}\n"
        f"pool_mode = {pool_mode}\n"
        "max_client_conn = 200\n"
        "default_pool_size = 4\n"
        "server_reset_query =\n"
        f"logfile = {root / 'pgbouncer.log'}\n"
        f"pidfile = {root / 'pgbouncer.pid'}\n"
    )
    if uid is not None:
        for path in (root, users, ini):
            os.chown(path, uid, gid if gid is not None else -1)
        if server_host.startswith("/"):  # let the unprivileged pooler reach the socket (o+x)
            os.chmod(server_host, os.stat(server_host).st_mode | 0o011)
    proc = subprocess.Popen(
        [binary, str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=demote,
        cwd=root,
    )
    pooler = Pooler(port, root / "pgbouncer.log")
    try:
        if wait and pool_mode == "statement":  # refuses the probe's transaction: see it listen
            _wait_listening(port, alive=lambda: proc.poll() is None)
        elif wait:
            wait_until_accepting(
                pooler.dsn_for(server_dsn), timeout_s=20, alive=lambda: proc.poll() is None
            )
        yield pooler
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        print((root / "pgbouncer.log").read_text()[-1500:]) if os.environ.get("PGB_DEBUG") else None
        shutil.rmtree(root, ignore_errors=True)
