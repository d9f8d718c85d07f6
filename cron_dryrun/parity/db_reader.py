"""Which way the parity diff reads usage_events, and the one place that falls back.

``adbc`` (the default, usage_arrow): binary COPY as an Arrow stream, grouped in DuckDB.
``copy-csv`` (usage_totals): grouped in PostgreSQL, ``COPY ... (FORMAT csv)`` over two
connections sharing a snapshot. When ADBC cannot be used — the driver is not installed
(no wheel for the platform), libpq in the driver cannot connect (an auth method it lacks),
the server or a pooler refuses the transaction settings or the binary COPY, DuckDB cannot
scan or group the stream — the diff reads over ``copy-csv`` instead, and the report says
so (``dbReader``, ``dbReaderFallback``). Whatever ADBC read is dropped first, so the diff
still reads everything from one snapshot.

Both paths connect with the same conninfo (``database.read_only_conninfo``): URL or
keyword DSNs, ``sslmode``, ``PGPASSWORD`` and the other ``PG*`` variables are libpq's in
both; messages never carry the password.

``CRON_DRYRUN_DB_READER`` (or ``cron-dryrun diff --db-reader``): ``auto`` (default),
``adbc`` (no fallback: an error is an error) or ``copy-csv``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from cron_dryrun.parity.reconcile import DB_READERS, DbLoader, DbTotalsFiles

ENV_VAR = "CRON_DRYRUN_DB_READER"
CHOICES = ("auto", *DB_READERS)


def reader_choice(value: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """``value`` if given, else ``CRON_DRYRUN_DB_READER``, else ``auto``; checked."""
    env = os.environ if env is None else env
    choice = (value or env.get(ENV_VAR, "") or "auto").strip().lower()
    if choice not in CHOICES:
        raise ValueError(
            f"{ENV_VAR}/--db-reader must be one of {', '.join(CHOICES)}, got {choice!r}"
        )
    return choice


def scrub(text: str, dsn: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` without the DSN's password or PGPASSWORD, should a driver message carry them."""
    from psycopg.conninfo import conninfo_to_dict

    env = os.environ if env is None else env
    secrets = [env.get("PGPASSWORD", "")]
    with contextlib.suppress(Exception):  # an unparsable DSN fails later, on both paths
        secrets.append(str(conninfo_to_dict(dsn).get("password") or ""))
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return f"the ADBC PostgreSQL driver is not installed here ({exc})"
    first = " ".join(str(exc).split())[:300] or "no message"
    return f"{type(exc).__name__}: {first}"


class UsageReader(DbLoader):
    """The database side of the diff for ``dsn``: ADBC first, the CSV path as fallback."""

    def __init__(self, dsn: str, choice: str = "auto", parts: int = 2) -> None:
        self.dsn, self.choice, self.parts = dsn, reader_choice(choice), parts

    def load(self, first_day: date, last_day: date, out: Path, duck: Any) -> DbTotalsFiles:
        fallback: str | None = None
        if self.choice in ("auto", "adbc"):
            try:
                self._load_adbc(first_day, last_day, duck)
                return DbTotalsFiles((), reader="adbc", tables=True)
            except Exception as exc:
                if self.choice == "adbc":  # asked for explicitly: no quiet fallback
                    if isinstance(exc, ImportError):
                        raise RuntimeError(
                            f"{_reason(exc)}: install adbc-driver-postgresql, or read over "
                            "COPY csv (--db-reader copy-csv or auto)"
                        ) from exc
                    raise
                fallback = scrub(_reason(exc), self.dsn)
        from cron_dryrun.parity.usage_totals import copy_daily_totals_parallel

        files = copy_daily_totals_parallel(self.dsn, first_day, last_day, out, self.parts)
        return DbTotalsFiles(files.totals, files.stats, reader="copy-csv", fallback=fallback)

    def _load_adbc(self, first_day: date, last_day: date, duck: Any) -> None:
        from cron_dryrun.parity.usage_arrow import drop_tables, load_keydays
        from cron_dryrun.target.database import read_only_conninfo

        try:
            load_keydays(read_only_conninfo(self.dsn), first_day, last_day, duck)
        except BaseException:
            drop_tables(duck)
            raise


__all__ = ["CHOICES", "ENV_VAR", "UsageReader", "reader_choice", "scrub"]
