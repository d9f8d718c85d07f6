"""Which way the parity diff reads usage_events, and the one place that falls back.

``adbc`` (the default, usage_arrow): binary COPY as an Arrow stream, grouped in DuckDB.
``copy-csv`` (usage_totals): grouped in PostgreSQL, ``COPY ... (FORMAT csv)`` over two
connections sharing a snapshot. When ADBC cannot be used — the driver is not installed
(no wheel for the platform), libpq in the driver cannot connect (an auth method it lacks),
the server or a pooler refuses the transaction settings or the binary COPY, DuckDB cannot
scan or group the stream — the diff reads over ``copy-csv`` instead, and the report says
so (``dbReader``, ``dbReaderFallback``). Whatever ADBC read is dropped first, so the diff
still reads everything from one snapshot.

Both paths connect with the same conninfo (``database.read_only_conninfo``; ADBC's is
built without importing psycopg, ``db_url.with_connect_timeout``, and libpq reads both
alike): URL or keyword DSNs, ``sslmode``, ``PGPASSWORD`` and the other ``PG*`` variables
are libpq's in both; messages never carry the password.

``CRON_DRYRUN_DB_READER`` (or ``cron-dryrun diff --db-reader``): ``auto`` (default),
``adbc`` (no fallback: an error is an error) or ``copy-csv``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cron_dryrun.parity.db_side import DB_READERS, DbLoader, DbTotalsFiles, TwinExchange

if TYPE_CHECKING:
    from cron_dryrun.parity.usage_arrow import LoadedKeyDays

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
    """``text`` without the DSN's password or PGPASSWORD, in any form, should a driver
    message carry them: the one redaction layer every output goes through."""
    from cron_dryrun.redaction import Redactor, known_secrets

    env = os.environ if env is None else env
    return Redactor(known_secrets(None, dsns=[dsn], extra=[env.get("PGPASSWORD")])).redact(text)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ImportError):
        return f"the ADBC PostgreSQL driver is not installed here ({exc})"
    from cron_dryrun.config.dsn_rules import libpq_message

    # our sentence for a message that echoes the DSN; the rest cut only after scrub() (the caller)
    first = " ".join(libpq_message(str(exc), getattr(exc, "sqlstate", None)).split())
    return f"{type(exc).__name__}: {first or 'no message'}"


def _scrubbed_excerpt(text: str, dsn: str, limit: int = 300) -> str:
    """Redacted in full, then cut: a password across the cut leaves no head behind."""
    from cron_dryrun.redaction import redacted_excerpt

    excerpt, cut = redacted_excerpt(text, limit, lambda t: scrub(t, dsn))
    return excerpt + ("..." if cut else "")


class UsageReader(DbLoader):
    """The database side of the diff for ``dsn``: ADBC first, the CSV path as fallback.

    ``wake``: waits for a suspended database (cli.options.waker) and returns the attempts
    it took. It is called only when a connection is due and may be asleep: after ADBC's
    first attempt failed (a database that was asleep and now answers is read over ADBC
    again, not given up on), or before the CSV path's first connection. A database that
    answers at once costs nothing extra.
    """

    def __init__(
        self,
        dsn: str,
        choice: str = "auto",
        parts: int = 2,
        wake: Callable[[], int] | None = None,
    ) -> None:
        self.dsn, self.choice, self.parts = dsn, reader_choice(choice), parts
        self._wake = wake

    def unrecorded(
        self, days: Sequence[date], metrics: Sequence[str]
    ) -> Mapping[date, frozenset[str]]:
        """db_side.UnrecordedProbe for the CSV path (ADBC's answer is in its stats table).

        The comparison asks it only when a judged day's DB total of a metric is 0 while the
        export's is not: rarely, so the database is asked then, not on every run (the one
        call a request makes back to the database side: tests/test_parity_walk.py).
        """
        from cron_dryrun.parity.usage_totals import unrecorded_metrics

        return unrecorded_metrics(self.dsn, days, metrics)

    def _woke(self) -> bool:
        """Wake the database once, if a wake-up was given; True when it had been asleep."""
        wake, self._wake = self._wake, None
        return wake is not None and wake() > 1

    def load(
        self,
        first_day: date,
        last_day: date,
        out: Path,
        duck: Any,
        twins: TwinExchange | None = None,
    ) -> DbTotalsFiles:
        fallback: str | None = None
        if self.choice in ("auto", "adbc"):
            loaded = self._try_adbc(first_day, last_day, duck, twins)
            if (
                isinstance(loaded, Exception)
                and not isinstance(loaded, ImportError)
                and self._woke()
            ):
                loaded = self._try_adbc(first_day, last_day, duck, twins)
            if not isinstance(loaded, Exception):
                return DbTotalsFiles(
                    (), reader="adbc", tables=True, keyed=loaded.keyed, slim=loaded.slim
                )
            error = loaded
            if self.choice == "adbc":  # asked for explicitly: no quiet fallback
                if isinstance(error, ImportError):
                    raise RuntimeError(
                        f"{_reason(error)}: install adbc-driver-postgresql, or read over "
                        "COPY csv (--db-reader copy-csv or auto)"
                    ) from error
                raise error
            fallback = _scrubbed_excerpt(_reason(error), self.dsn)
        self._woke()
        from cron_dryrun.parity.usage_totals import copy_daily_totals_parallel

        files = copy_daily_totals_parallel(self.dsn, first_day, last_day, out, self.parts)
        return DbTotalsFiles(files.totals, files.stats, reader="copy-csv", fallback=fallback)

    def _try_adbc(
        self, first_day: date, last_day: date, duck: Any, twins: TwinExchange | None
    ) -> LoadedKeyDays | Exception:
        """What the ADBC read made, or why it failed."""
        try:
            return self._load_adbc(first_day, last_day, duck, twins)
        except Exception as exc:  # last resort: any ADBC failure (no driver, no common base) falls back to COPY csv
            return exc

    def _load_adbc(
        self, first_day: date, last_day: date, duck: Any, twins: TwinExchange | None
    ) -> LoadedKeyDays:
        from cron_dryrun.config.db_url import CONNECT_TIMEOUT_S, with_connect_timeout
        from cron_dryrun.parity.usage_arrow import drop_tables, load_keydays

        try:
            return load_keydays(
                with_connect_timeout(self.dsn, CONNECT_TIMEOUT_S), first_day, last_day, duck, twins
            )
        except BaseException:
            drop_tables(duck)
            raise


__all__ = ["CHOICES", "ENV_VAR", "UsageReader", "reader_choice", "scrub"]
