"""A running PostgreSQL server, as every provider (embedded, testcontainers) hands it over,
and the bounded wait until it accepts connections."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from cron_dryrun.errors import CronDryrunError

READY_TIMEOUT_S = 30.0


class DatabaseUnavailable(CronDryrunError, RuntimeError):
    """No database could be had; the message lists every way out."""


@dataclass
class RunningPostgres:
    """A server we can create databases on; ``stop`` releases whatever was started."""

    dsn: str
    backend: str
    stop: Callable[[], None] = field(default=lambda: None, repr=False)


# -- readiness ------------------------------------------------------------------------------------


def wait_until_accepting(
    dsn: str, timeout_s: float = READY_TIMEOUT_S, alive: Callable[[], bool] | None = None
) -> None:
    """Bounded retry on a real connection; gives up after ``timeout_s`` with the last error."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    last: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise DatabaseUnavailable(f"PostgreSQL exited before accepting connections ({last})")
        try:
            with psycopg.connect(dsn, connect_timeout=2) as conn:
                conn.execute("select 1")
            return
        except psycopg.OperationalError as exc:
            last = exc
        # backoff between connection attempts, bounded by the deadline above
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)
    raise DatabaseUnavailable(
        f"PostgreSQL did not accept connections within {timeout_s:.0f}s: {last}"
    )
