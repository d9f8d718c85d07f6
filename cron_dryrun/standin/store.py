"""Writes into usage_events: the unique-index upsert the app uses, and plain inserts.

The upsert's ON CONFLICT target repeats usage_admin_bucket_idx's expressions and
predicate, so PostgreSQL infers that very index (and errors if it is missing).
``RETURNING (xmax = 0)`` is true for a fresh tuple, false for one rewritten by the
DO UPDATE branch: that is how inserts and updates are counted without a second query.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from cron_dryrun.standin.usage_rows import COLUMNS, EventRow

_COLUMN_LIST = ", ".join(f'"{c}"' for c in COLUMNS)
_PLACEHOLDERS = ", ".join(["%s"] * len(COLUMNS))
_KEY_COLUMNS = {
    "key_id",
    "model",
    "window_start",
    "window_end",
    "project_id",
    "openai_api_key_id",
    "openai_user_id",
    "service_tier",
    "batch",
}

INSERT_SQL = f"INSERT INTO usage_events ({_COLUMN_LIST}) VALUES ({_PLACEHOLDERS})"
UPSERT_SQL = (
    INSERT_SQL + " ON CONFLICT (key_id, model, window_start, window_end, coalesce(project_id, ''),"
    " coalesce(openai_api_key_id, ''), coalesce(openai_user_id, ''), coalesce(service_tier, ''),"
    " coalesce(batch, false)) WHERE window_start IS NOT NULL DO UPDATE SET "
    + ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in COLUMNS if c not in _KEY_COLUMNS)
    + " RETURNING (xmax = 0) AS inserted"
)


def upsert_rows(conn: psycopg.Connection, rows: Iterable[EventRow]) -> tuple[int, int]:
    """Upsert through usage_admin_bucket_idx; returns (inserted, updated)."""
    inserted = updated = 0
    with conn.cursor() as cur:
        for row in rows:
            cur.execute(UPSERT_SQL, row.params())
            result = cur.fetchone()
            if result is not None and result[0]:
                inserted += 1
            else:
                updated += 1
    return inserted, updated


def insert_rows(conn: psycopg.Connection, rows: Iterable[EventRow]) -> int:
    """Plain INSERTs: no conflict handling (seed history, and the duplicate-rerun fault)."""
    params = [row.params() for row in rows]
    if params:
        with conn.cursor() as cur:
            cur.executemany(INSERT_SQL, params)
    return len(params)
