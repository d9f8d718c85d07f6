"""What one dry run recorded: the exchange with the cron and what the database saw.

Plain data, no I/O: built once per session (``session.trigger``), read by every check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cron_dryrun.bounds import word_excerpt
from cron_dryrun.errors import CronDryrunError

if TYPE_CHECKING:
    from cron_dryrun.target.client import Exchange


def short_problem(problem: str | None, limit: int = 160) -> str:
    """The problem's first clause, without the answer's body: the cause is printed in full
    once (root cause, auth smoke check), not once per check that depends on it."""
    first = re.split(r"; |, content type | \(status |: status ", problem or "no answer")[0]
    return word_excerpt(first, limit)


class ExchangeMissing(CronDryrunError, AssertionError):
    """A check needs the cron's answer, and there is none to judge."""


@dataclass(frozen=True)
class UsageRow:
    """A usage_events row as the checks see it (windows are naive UTC, as stored)."""

    id: int
    key_id: int
    model: str
    window_start: datetime | None
    window_end: datetime | None

    def describe(self) -> str:
        start = self.window_start.isoformat() if self.window_start else "NULL"
        end = self.window_end.isoformat() if self.window_end else "NULL"
        return f"id={self.id} key={self.key_id} model={self.model} window=[{start}, {end})"


@dataclass(frozen=True)
class DbObservation:
    """Read-only facts around one trigger: counts and the rows the trigger wrote."""

    row_count_before: int
    row_count_after: int
    changed_rows: tuple[UsageRow, ...]
    max_id_before: int | None = None  # the largest id at the watermark: above it, inserted


@dataclass
class RecordedRun:
    """One trigger of the cron and its effect: shared by every check of the session."""

    target: str
    method: str
    run_at: datetime
    exchange: Exchange | None
    problem: str | None  # why the exchange cannot be judged; None when it can
    body: dict[str, Any] | None
    active_openai_keys: int | None = None
    db: DbObservation | None = None
    db_error: str | None = None

    def require_exchange(self) -> dict[str, Any]:
        """The JSON body, or a failure saying why the exchange was not made."""
        __tracebackhide__ = True
        if self.problem is not None or self.body is None:
            raise ExchangeMissing(
                f"the cron exchange was not made, so this check cannot judge it: "
                f"{short_problem(self.problem)} (in full: the root cause and the auth smoke check)"
            )
        return self.body

    def require_db(self) -> DbObservation:
        __tracebackhide__ = True
        self.require_exchange()
        if self.db is None:
            raise ExchangeMissing(f"the database could not be read around the run: {self.db_error}")
        return self.db
