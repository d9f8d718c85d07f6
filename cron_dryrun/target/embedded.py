"""The embedded provider: a PostgreSQL server from the pgserver wheel or the machine's own
binaries, in a temporary directory, stopped with its parent (pg_guard).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cron_dryrun.target import pg_guard
from cron_dryrun.target.pg_server import (
    DatabaseUnavailable,
    RunningPostgres,
    wait_until_accepting,
)

UNPRIVILEGED_USER = "nobody"


NO_POSTGRES_MESSAGE = (
    "no PostgreSQL for the local stack: the embedded backend found neither the pgserver wheel "
    "(CPython 3.9-3.12 only) nor PostgreSQL server binaries (checked `pg_config --bindir`, PATH "
    "and /usr/lib/postgresql/*/bin). Ways out: (1) point at a database with DATABASE_URL="
    "postgres://... (or --database-url); (2) start Docker and use DB_BACKEND=testcontainers; "
    "(3) install PostgreSQL (e.g. `apt-get install postgresql` or `pip install pgserver`)."
)


# -- embedded: system binaries --------------------------------------------------------------------


def find_postgres_bindir() -> Path | None:
    """Where initdb and postgres live: pg_config --bindir, PATH, /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            candidates.append(Path(out))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    candidates.extend(
        sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
    )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demote(user: str) -> tuple[Callable[[], None] | None, int | None, int | None]:
    """As root, initdb and postgres refuse to run: run them as an unprivileged user."""
    if os.geteuid() != 0:
        return None, None, None
    entry = pwd.getpwnam(user)

    def demote() -> None:
        os.setgid(entry.pw_gid)
        os.setgroups([])
        os.setuid(entry.pw_uid)

    return demote, entry.pw_uid, entry.pw_gid


def start_system_postgres(bindir: Path, base_dir: Path | None = None) -> RunningPostgres:
    """initdb + postgres from the machine's binaries, on 127.0.0.1 and an ephemeral port."""
    root = Path(tempfile.mkdtemp(prefix="cron-dryrun-pg-", dir=base_dir))
    data = root / "data"
    demote, uid, gid = _demote(UNPRIVILEGED_USER)
    if uid is not None:
        os.chmod(root, 0o755)
        os.chown(root, uid, gid if gid is not None else -1)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    env.pop("PGDATA", None)
    init = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        text=True,
        preexec_fn=demote,
        env=env,
        cwd=root,
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise DatabaseUnavailable(f"initdb failed ({bindir}): {init.stderr.strip()[-800:]}")
    last_error = ""
    for _attempt in range(5):  # another process may take the port between probe and bind
        port = free_port()
        log = open(root / "postgres.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={root}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=demote,
            env=env,
            cwd=root,
        )
        log.close()
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

        watcher = pg_guard.guard(data, remove=root)

        def stop(
            proc: subprocess.Popen[bytes] = proc, watcher: subprocess.Popen[bytes] = watcher
        ) -> None:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: smart shutdown
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
            pg_guard.release(watcher)
            shutil.rmtree(root, ignore_errors=True)

        try:

            def alive(proc: subprocess.Popen[bytes] = proc) -> bool:
                return proc.poll() is None

            wait_until_accepting(dsn, alive=alive)
            return RunningPostgres(dsn=dsn, backend="embedded (system binaries)", stop=stop)
        except DatabaseUnavailable as exc:
            last_error = str(exc)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
            pg_guard.release(watcher)
    log_tail = (root / "postgres.log").read_text(errors="replace")[-800:]
    shutil.rmtree(root, ignore_errors=True)
    raise DatabaseUnavailable(f"postgres did not start ({bindir}): {last_error}\n{log_tail}")


# -- embedded: pgserver wheel ---------------------------------------------------------------------


def _import_pgserver() -> Any:
    # pgserver resolves a runtime dir at import and warns when XDG_RUNTIME_DIR is unset
    # (as in CI); the fallback it picks works, so the warning is noise for operators.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver

    return pgserver


def pgserver_available() -> bool:
    try:
        _import_pgserver()
    except ImportError:
        return False
    return True


def start_pgserver(base_dir: Path | None = None) -> RunningPostgres:
    pgserver = _import_pgserver()
    root = Path(tempfile.mkdtemp(prefix="cron-dryrun-pgserver-", dir=base_dir))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        server = pgserver.get_server(root, cleanup_mode="delete")
    dsn = server.get_uri()
    watcher = pg_guard.guard(root, remove=root)

    def stop() -> None:
        with contextlib.suppress(Exception):
            server.cleanup()
        pg_guard.release(watcher)
        shutil.rmtree(root, ignore_errors=True)

    wait_until_accepting(dsn)
    return RunningPostgres(dsn=dsn, backend="embedded (pgserver)", stop=stop)


def start_embedded(base_dir: Path | None = None, prefer: str = "auto") -> RunningPostgres:
    """pgserver where its wheel is installed, else the machine's binaries, else a clear error."""
    if prefer in ("auto", "pgserver") and pgserver_available():
        return start_pgserver(base_dir)
    if prefer == "pgserver":
        raise DatabaseUnavailable("the pgserver wheel is not installed (pip install pgserver)")
    # prefer == "system", or "auto" without the wheel
    bindir = find_postgres_bindir()
    if bindir is None:
        raise DatabaseUnavailable(NO_POSTGRES_MESSAGE)
    return start_system_postgres(bindir, base_dir)
