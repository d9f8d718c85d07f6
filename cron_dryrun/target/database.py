"""The app database, as the suite uses it: read-only access and the reads around a trigger,
and, for the local stack, a fresh app database with the app's tables (fixtures/schema.sql).
Against staging the given URL is used as it is and only ever read.
"""

from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import conninfo, sql

from cron_dryrun.config.db_url import CONNECT_TIMEOUT_S
from cron_dryrun.errors import CronDryrunError


class DatabaseError(CronDryrunError, psycopg.OperationalError):
    """A failed connection whose message holds neither the DSN nor its password (still a
    psycopg.OperationalError, so callers catching psycopg's errors see it unchanged)."""


def describe_db_error(exc: BaseException) -> str:
    """A database error in one line, without the connection string or its password: a libpq
    message that can echo the DSN becomes our own sentence (config.dsn_rules.libpq_message)."""
    from cron_dryrun.config.dsn_rules import libpq_message
    from cron_dryrun.redaction import mask_password_pairs

    first = mask_password_pairs(libpq_message(str(exc), getattr(exc, "sqlstate", None)))
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def with_database(dsn: str, dbname: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(
        (parts.scheme, parts.netloc, "/" + quote(dbname), parts.query, parts.fragment)
    )


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
    return conninfo.make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT_S)


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


def max_usage_id(conn: psycopg.Connection) -> int:
    """The largest usage_events id (0 when empty): ids come from a sequence, so a row written
    later with a larger id was inserted after this read, one with a smaller id updated."""
    return _count(conn, "select coalesce(max(id), 0) from usage_events")


def active_openai_keys(conn: psycopg.Connection) -> int:
    return _count(conn, "select count(*) from provider_keys where provider = 'openai'")


def openai_keys(conn: psycopg.Connection) -> list[tuple[int, str]]:
    """(id, usage_mode) of every OpenAI key in provider_keys, by id."""
    rows = _rows(
        conn, "select id, usage_mode from provider_keys where provider = 'openai' order by id"
    )
    return [(int(r[0]), str(r[1])) for r in rows]


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
            self.max_id_before = max_usage_id(conn)
            self.openai_keys = active_openai_keys(conn)

    def written(self) -> tuple[list[tuple[Any, ...]], int]:
        """The rows written since the watermark, and the row count now."""
        with read_only(self._dsn) as conn:
            return rows_written_since(conn, self.watermark), usage_row_count(conn)
