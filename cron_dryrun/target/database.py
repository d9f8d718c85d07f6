"""Database providers (url, testcontainers, embedded, auto) and local provisioning.

A provider yields a *server* DSN. For the local stack a fresh database is created
on it and the app's tables (fixtures/schema.sql) are loaded; against staging the
given URL is used as it is and only ever read.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import conninfo, sql

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


def redact_dsn(dsn: str) -> str:
    """The DSN with its whole userinfo and any password replaced, safe for messages and evidence."""
    from cron_dryrun.redaction import redact_dsn as redacted

    return redacted(dsn)


class DatabaseError(psycopg.OperationalError):
    """A failed connection whose message holds neither the DSN nor its password (still a
    psycopg.OperationalError, so callers catching psycopg's errors see it unchanged)."""


def describe_db_error(exc: BaseException) -> str:
    """A database error in one line, without the connection string or its password."""
    import re

    text = str(exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    first = re.sub(r"(?i)\bpassword\s*=\s*('(?:\\.|[^'])*'|\S+)", "password=***", first)
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def with_database(dsn: str, dbname: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(
        (parts.scheme, parts.netloc, "/" + quote(dbname), parts.query, parts.fragment)
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


# -- provisioning ---------------------------------------------------------------------------------


def docker_engine_answers(timeout_s: float = 2.0) -> bool:
    """True when a Docker engine answers its ping; never raises."""
    try:
        import docker

        client = docker.from_env(timeout=int(max(1, timeout_s)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def choose_backend(
    backend: str, database_url: str | None, docker_answers: Callable[[], bool]
) -> str:
    """design.md's auto rule: url if given, else testcontainers if Docker answers, else embedded."""
    if backend != "auto":
        return backend
    if database_url:
        return "url"
    return "testcontainers" if docker_answers() else "embedded"


@contextlib.contextmanager
def provide_server(backend: str, postgres_image: str) -> Iterator[RunningPostgres]:
    """A PostgreSQL server from the testcontainers or embedded backend, stopped on exit."""
    if backend == "testcontainers":
        from cron_dryrun.target.containers import start_postgres_container

        running = start_postgres_container(postgres_image)
    elif backend == "embedded":
        running = start_embedded()
    else:
        raise ValueError(f"backend {backend!r} does not provision a server")
    try:
        yield running
    finally:
        running.stop()


def schema_sql() -> str:
    """The app's tables: fixtures/schema.sql in a checkout, the packaged copy otherwise."""
    here = Path(__file__).resolve().parents[2] / "fixtures" / "schema.sql"
    if here.is_file():
        return here.read_text()
    return resources.files("cron_dryrun").joinpath("data/schema.sql").read_text()


def create_app_database(server_dsn: str, name: str | None = None) -> str:
    """A fresh database with the app's tables; returns its DSN."""
    name = name or f"cron_dryrun_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = with_database(server_dsn, name)
    with psycopg.connect(dsn, connect_timeout=10) as conn:
        conn.execute(schema_sql().encode())
    return dsn


def database_name(dsn: str) -> str:
    from urllib.parse import unquote

    return unquote(urlsplit(dsn).path.lstrip("/"))


def drop_database(server_dsn: str, name: str) -> None:
    with psycopg.connect(server_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def read_only_conninfo(dsn: str) -> str:
    """The libpq connection string of every read-only connection, psycopg's or ADBC's
    (db_reader): the DSN (URL or keywords) as libpq parses it, plus the connect timeout.
    Passwords, sslmode and the PG* variables are libpq's business on both paths."""
    return conninfo.make_conninfo(dsn, connect_timeout=10)


def read_only(dsn: str) -> psycopg.Connection:
    """A connection whose every transaction is READ ONLY: the suite never writes by accident.

    A failed connection is re-raised as ``DatabaseError`` without psycopg's frames (their
    arguments hold the connection string) and without the DSN in the message.
    """
    # prepare_threshold=None: no server-side prepared statements, which a pooler in
    # transaction mode (Neon's -pooler endpoints, PgBouncer) cannot keep per client.
    # READ ONLY is sent with each BEGIN, not set once per session, for the same reason.
    try:
        conn = psycopg.connect(read_only_conninfo(dsn), autocommit=False, prepare_threshold=None)
    except psycopg.Error as exc:
        raise DatabaseError(
            f"the database did not accept a connection ({describe_db_error(exc)}); "
            "check DATABASE_URL's host, port, user and password"
        ) from None
    conn.read_only = True
    return conn


# -- read-only observations around a trigger ------------------------------------------------------
# The app's usage_events has no updated_at column; a row's xmin (the transaction that wrote
# its current version) is the exact, read-only way to find what a run inserted or updated.
# xmin is a 32-bit xid, so the 64-bit watermark is compared modulo 2^32 (a wraparound inside
# one run is not handled).

XID_MODULUS = 2**32


def _count(conn: psycopg.Connection, query: str) -> int:
    """One integer, read in its own short read-only transaction."""
    row = conn.execute(query).fetchone()
    conn.rollback()
    assert row is not None
    return int(row[0])


def _rows(
    conn: psycopg.Connection, query: str, params: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    rows = conn.execute(query, params).fetchall()
    conn.rollback()
    return rows


def xid_watermark(conn: psycopg.Connection) -> int:
    """The first transaction id that did not exist yet: rows with xmin >= it are newer."""
    return (
        _count(conn, "select pg_snapshot_xmax(pg_current_snapshot())::text::bigint") % XID_MODULUS
    )


def usage_row_count(conn: psycopg.Connection) -> int:
    return _count(conn, "select count(*) from usage_events")


def rows_written_since(conn: psycopg.Connection, watermark: int) -> list[tuple[Any, ...]]:
    """(id, key_id, model, window_start, window_end) of rows whose current version is newer."""
    return _rows(
        conn,
        "select id, key_id, model, window_start, window_end from usage_events "
        "where xmin::text::bigint >= %s order by id",
        (watermark,),
    )


def active_openai_keys(conn: psycopg.Connection) -> int:
    return _count(conn, "select count(*) from provider_keys where provider = 'openai'")


def usage_events_columns(conn: psycopg.Connection) -> list[str]:
    rows = _rows(
        conn,
        "select column_name from information_schema.columns "
        "where table_name = 'usage_events' and table_schema = any(current_schemas(false))",
    )
    return [r[0] for r in rows]


def duplicate_bucket_keys(conn: psycopg.Connection) -> int:
    """How many usage_admin_bucket_idx keys are held by more than one row (0 when the index holds)."""
    return _count(
        conn,
        "select count(*) from (select 1 from usage_events where window_start is not null "
        "group by key_id, model, window_start, window_end, coalesce(project_id, ''), "
        "coalesce(openai_api_key_id, ''), coalesce(openai_user_id, ''), "
        "coalesce(service_tier, ''), coalesce(batch, false) having count(*) > 1) d",
    )


class UsageWatch:
    """A read-only look at usage_events before a trigger, and what the trigger wrote after it.

    The one place the suite turns the xmin watermark into "rows this request changed": the
    shared run, the rerun and the auth negatives all use it.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        with read_only(dsn) as conn:
            self.watermark = xid_watermark(conn)
            self.rows_before = usage_row_count(conn)
            self.openai_keys = active_openai_keys(conn)

    def written(self) -> tuple[list[tuple[Any, ...]], int]:
        """The rows written since the watermark, and the row count now."""
        with read_only(self._dsn) as conn:
            return rows_written_since(conn, self.watermark), usage_row_count(conn)
