"""A run you can watch: a line when each trigger starts, the elapsed time while it waits.

A real run over many users takes minutes; the terminal must not sit silent. The cron
client calls ``started``/``finished`` around every request. On a terminal the elapsed
time is redrawn in place every second; elsewhere (CI logs) there is one plain line when
a request starts and one when it ends. ``exchange_durations`` (pure) is the one-line
account of every exchange's duration for the verdict table and summary.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from cron_dryrun.redaction import escape_controls

if TYPE_CHECKING:
    from cron_dryrun.target.client import Transcript

TICK_S = 1.0
AUTH_NEGATIVE = "auth negative: "


def outcome(t: Transcript) -> str:
    """``200 OK`` or ``no answer (timed out ...)``, without the duration."""
    if t.status is None:
        return f"no answer ({t.error})"
    return f"{t.status} {t.reason}".rstrip()


def exchange_durations(transcripts: Iterable[Transcript]) -> str:
    """Every exchange with its status and duration; the auth negatives as one group."""
    parts: list[str] = []
    negatives: list[Transcript] = []
    for t in transcripts:
        if t.label.startswith(AUTH_NEGATIVE):
            negatives.append(t)
            continue
        parts.append(f"{t.label} {outcome(t)} in {t.elapsed_s:.2f} s")
    if negatives:
        statuses = sorted(
            {str(t.status) if t.status is not None else "no answer" for t in negatives}
        )
        low = min(t.elapsed_s for t in negatives)
        high = max(t.elapsed_s for t in negatives)
        total = sum(t.elapsed_s for t in negatives)
        parts.append(
            f"{len(negatives)} auth negatives {'/'.join(statuses)} in {low:.2f}-{high:.2f} s "
            f"each ({total:.2f} s in all)"
        )
    # the reason phrases are the target's: shown escaped wherever this line goes
    return escape_controls("; ".join(parts)) if parts else "none"


class TerminalWatch:
    """``say`` writes one line; ``tick`` (terminals only) redraws the current line in place."""

    def __init__(
        self,
        say: Callable[[str], None],
        tick: Callable[[str], None] | None = None,
        interval_s: float = TICK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._say = say
        self._tick = tick
        self._interval_s = interval_s
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def started(self, label: str, method: str, url: str, timeout_s: float) -> None:
        # the auth negatives answer in milliseconds: one line each would bury pytest's
        # progress; the verdict's "exchanges:" line gives them as one group
        if not label.startswith(AUTH_NEGATIVE):
            self._say(f"triggering {method} {url} ({label}), waiting up to {timeout_s:g} s")
        if self._tick is None:
            return
        self._stop = threading.Event()
        began = self._clock()
        tick, stop = self._tick, self._stop

        def redraw() -> None:
            # bounded by the request: finished() sets the event in a finally
            while not stop.wait(self._interval_s):
                tick(f"  {label}: waiting, {self._clock() - began:.0f} s elapsed")

        self._thread = threading.Thread(target=redraw, name="cron-dryrun-watch", daemon=True)
        self._thread.start()

    def finished(self, label: str, transcript: Transcript | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._interval_s + 1.0)
            self._thread = None
            if self._tick is not None:
                self._tick("")  # clear the redrawn line
        if transcript is None:
            self._say(f"{label}: interrupted")
            return
        if not label.startswith(AUTH_NEGATIVE):
            self._say(f"{label}: {outcome(transcript)} in {transcript.elapsed_s:.2f} s")
