"""The first connection to the app database, retried while a suspended compute wakes.

A Neon compute suspended for inactivity wakes on the first connection, which then
takes seconds or fails with a transient error. ``wake_database`` retries with a
bounded backoff up to ``timeout_s`` (``--db-connect-timeout``), says so once through
``say`` ("waiting for the database to wake ..."), and names the last error when it
gives up. Errors that waiting cannot fix (authentication, unknown database) are
raised at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

DEFAULT_CONNECT_TIMEOUT_S = 30.0
MAX_DELAY_S = 4.0
# SQLSTATE classes / codes no amount of waiting fixes
_PERMANENT = ("28", "3D000", "42501")


class DatabaseWakeError(RuntimeError):
    """The database did not answer in time, or refused for good; the message says which."""


def _first_line(exc: BaseException) -> str:
    from cron_dryrun.target.database import describe_db_error  # libpq's echoes mapped

    return describe_db_error(exc)


# libpq reports a refused login as text (no SQLSTATE on a failed connection attempt)
_PERMANENT_TEXT = (
    "password authentication failed",
    "is not permitted to log in",
    "no pg_hba.conf entry",
    "does not exist",
)


def _permanent(exc: psycopg.Error) -> bool:
    code = exc.sqlstate or ""
    if any(code.startswith(p) for p in _PERMANENT):
        return True
    text = str(exc)
    return "FATAL" in text and any(phrase in text for phrase in _PERMANENT_TEXT)


def wake_database(
    dsn: str,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    say: Callable[[str], None] = lambda _message: None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Connect (and ``select 1``) until it works or ``timeout_s`` passes; the attempts it took."""
    # imported here: the driver's import (~0.13 s) is paid only by whoever connects
    import psycopg

    deadline = clock() + timeout_s
    delay = 0.2
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - clock()
        try:
            with psycopg.connect(
                dsn, connect_timeout=max(2, min(10, int(remaining) + 1)), prepare_threshold=None
            ) as conn:
                conn.execute("select 1")
            if attempt > 1:
                say(f"the database answered after {attempt} attempts")
            return attempt
        except psycopg.Error as exc:
            if _permanent(exc):
                raise DatabaseWakeError(
                    f"the database refused the connection: {_first_line(exc)} (not retried: "
                    "check DATABASE_URL's user, password and database name)"
                ) from None
            last = exc
        remaining = deadline - clock()
        if remaining <= 0:
            raise DatabaseWakeError(
                f"the database did not answer within {timeout_s:g}s ({attempt} attempts; "
                f"raise --db-connect-timeout / DB_CONNECT_TIMEOUT if it is waking slowly): "
                f"last error: {_first_line(last)}"
            )
        if attempt == 1:
            say(
                f"waiting for the database to wake ... (up to {timeout_s:g}s, "
                f"--db-connect-timeout; first attempt: {_first_line(last)})"
            )
        sleep(min(delay, remaining))  # backoff between connection attempts, bounded above
        delay = min(delay * 2, MAX_DELAY_S)
