"""The first connection to the app database: waited for only while a compute wakes.

Which failures wait (README, "Which database errors wait"):

- **waited for**, with a bounded backoff up to ``timeout_s`` (``--db-connect-timeout``),
  said once ("waiting for the database to wake ..."): what a waking Neon compute does. The
  connection is accepted and then slow (libpq's connect timeout), or the server says it is
  starting ("the database system is starting up", Neon's "Couldn't connect to compute
  node"), or drops the connection while it starts.
- **a couple of quick retries** (about a second), then named: nothing listens at the host
  and port (connection refused), the host does not resolve, no route to it. A Neon endpoint
  always resolves and listens, even while its compute sleeps: these are a wrong host or port.
- **named at once**, with its fix: any other answer of the server or pooler (authentication,
  an unknown database or role, a pooler in statement mode, a quota).

``failure_of`` decides from the driver's message alone (pure, tested without a database).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cron_dryrun.errors import CronDryrunError

if TYPE_CHECKING:
    import psycopg

DEFAULT_CONNECT_TIMEOUT_S = 30.0
MAX_DELAY_S = 4.0
# a refused connection or an unknown host: retried this often, QUICK_DELAY_S apart (doubling)
QUICK_RETRIES = 2
QUICK_DELAY_S = 0.3

Kind = Literal["waking", "unreachable", "refused"]


class DatabaseWakeError(CronDryrunError, RuntimeError):
    """The database did not answer in time, or refused for good; the message says which."""


@dataclass(frozen=True)
class Failure:
    """One failed connection attempt: whether to wait, retry briefly or stop, and why."""

    kind: Kind
    why: str  # for "unreachable" and "refused": the sentence the operator reads, with the fix


def _first_line(exc: BaseException) -> str:
    from cron_dryrun.target.database import describe_db_error  # libpq's echoes mapped

    return describe_db_error(exc)


# what a waking compute (or its proxy) says; SQLSTATE 57P03 is cannot_connect_now
_WAKING_CODES = ("57P03", "57P01", "53300")
_WAKING_TEXT = (
    "timeout expired",
    "timed out",
    "the database system is starting up",
    "the database system is not yet accepting connections",
    "couldn't connect to compute node",
    "compute is starting",
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "too many clients",
    "remaining connection slots are reserved",
)
_SERVER_AT = re.compile(r'connection to server at "([^"]+)"(?: \([^)]*\))?, port (\d+) failed')
_SOCKET = re.compile(r'connection to server on socket "([^"]+)" failed')
_RESOLVE = re.compile(
    r"(?:failed to resolve host '([^']+)'|could not translate host name \"([^\"]+)\")"
)
# an answer of the server or pooler, with what to do about it (matched in lower case)
_ANSWERS: tuple[tuple[str, str], ...] = (
    (
        "statement pooling mode",
        "the pooler runs in statement mode, which refuses the transactions the checks read "
        "in: use the direct endpoint or a pooler in transaction mode (Neon's -pooler host is)",
    ),
    ("password authentication failed", "check DATABASE_URL's user and password"),
    ("no pg_hba.conf entry", "the server does not admit this user from this host: check the user"),
    ("is not permitted to log in", "the role may not log in: use a role with LOGIN"),
    ('role "', "check DATABASE_URL's user"),
    ('database "', "check the database name in DATABASE_URL (the path after the host)"),
    (
        "endpoint id is not specified",
        "give the Neon endpoint (a current libpq, or options=endpoint%3D<id>)",
    ),
    (
        "unsupported startup parameter",
        "the pooler refuses a connection option: drop it from DATABASE_URL",
    ),
    ("exceeded the compute time quota", "the Neon project's compute quota is used up: raise it"),
)


def _where(text: str) -> str | None:
    at = _SERVER_AT.search(text)
    if at:
        host = f"[{at.group(1)}]" if ":" in at.group(1) else at.group(1)
        return f"{host}:{at.group(2)}"
    socket = _SOCKET.search(text)
    return f"the socket {socket.group(1)}" if socket else None


def failure_of(message: str, sqlstate: str | None = None) -> Failure:
    """What one failed attempt means, from the driver's message (and SQLSTATE, when it has one)."""
    text = " ".join(message.split())
    lower = text.lower()
    if (sqlstate or "") in _WAKING_CODES or any(p in lower for p in _WAKING_TEXT):
        return Failure("waking", "")
    resolve = _RESOLVE.search(text)
    if resolve:
        host = resolve.group(1) or resolve.group(2)
        return Failure(
            "unreachable",
            f"host {host} does not resolve: check the host name in DATABASE_URL "
            "(a Neon host resolves even while its compute sleeps)",
        )
    where = _where(text) or "the host and port of DATABASE_URL"
    if "connection refused" in lower or "no such file or directory" in lower:
        return Failure(
            "unreachable",
            f"nothing listens at {where}: check the host and port in DATABASE_URL (a sleeping "
            "Neon compute still accepts the connection; it is not waited for)",
        )
    if "network is unreachable" in lower or "no route to host" in lower:
        return Failure(
            "unreachable",
            f"no route to {where}: check the host in DATABASE_URL and that this machine may "
            "reach it",
        )
    for phrase, fix in _ANSWERS:
        if phrase in lower and (phrase[-1] != '"' or "does not exist" in lower):
            return Failure("refused", fix)
    if sqlstate or "fatal:" in lower or "error:" in lower:
        return Failure("refused", "the server answered with this error: check DATABASE_URL")
    return Failure("unreachable", f"no connection to {where}: check DATABASE_URL")


def _attempt_failure(exc: psycopg.Error) -> Failure:
    return failure_of(str(exc), exc.sqlstate)


def wake_database(
    dsn: str,
    timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    say: Callable[[str], None] = lambda _message: None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Connect (and ``select 1`` in a transaction, as the checks read) until it works, the
    failure is not a waking compute's, or ``timeout_s`` passes; the attempts it took."""
    # imported here: the driver's import (~0.13 s) is paid only by whoever connects
    import psycopg

    deadline = clock() + timeout_s
    delay = 0.2
    attempt = 0
    quick_left = QUICK_RETRIES
    quick_delay = QUICK_DELAY_S
    said_waiting = False
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
            failure = _attempt_failure(exc)
            last = exc
        if failure.kind == "refused":
            raise DatabaseWakeError(
                f"the database refused the connection: {_first_line(last)} (not retried: "
                f"{failure.why})"
            ) from None
        remaining = deadline - clock()
        if failure.kind == "unreachable":
            if quick_left <= 0 or remaining <= 0:
                raise DatabaseWakeError(
                    f"{failure.why} ({attempt} attempts; last error: {_first_line(last)})"
                )
            quick_left -= 1
            sleep(min(quick_delay, max(0.0, remaining)))  # a brief retry, bounded by count
            quick_delay *= 2
            continue
        if remaining <= 0:
            raise DatabaseWakeError(
                f"the database did not answer within {timeout_s:g}s ({attempt} attempts; "
                f"raise --db-connect-timeout / DB_CONNECT_TIMEOUT if it is waking slowly): "
                f"last error: {_first_line(last)}"
            )
        if not said_waiting:
            said_waiting = True
            say(
                f"waiting for the database to wake ... (up to {timeout_s:g}s, "
                f"--db-connect-timeout; first attempt: {_first_line(last)})"
            )
        sleep(min(delay, remaining))  # backoff between connection attempts, bounded above
        delay = min(delay * 2, MAX_DELAY_S)
