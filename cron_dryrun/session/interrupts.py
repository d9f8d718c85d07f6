"""A signal ends the run as interrupted, whatever phase it lands in.

SIGTERM (a cancelled CI job) and SIGINT (Ctrl-C) are noted on the run's state and raised as
KeyboardInterrupt. Some libraries turn that into their own error: DuckDB reports a signal
during a query as ``RuntimeError: Query interrupted``. ``is_interrupt`` knows those, and
the plugin turns them (and any error after a noted signal) back into KeyboardInterrupt, so
pytest ends the session as interrupted (exit 2) and the run is recorded ``interrupted``:
never counted, never a complete red run.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cron_dryrun.session.state import DryRunState

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# what a signal becomes inside a library that catches KeyboardInterrupt: (type name, message)
_LIBRARY_INTERRUPTS = (("RuntimeError", "Query interrupted"), ("InterruptException", None))


def is_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a signal in disguise (KeyboardInterrupt, DuckDB's interrupt)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, KeyboardInterrupt):
            return True
        for name, message in _LIBRARY_INTERRUPTS:
            if type(current).__name__ == name and (message is None or str(current) == message):
                return True
        current = current.__cause__ or current.__context__
    return False


def interrupt_handler(state: DryRunState) -> Callable[[int, Any], None]:
    """The handler for SIGTERM and SIGINT: note the signal on the run, end the session."""

    def interrupt(signum: int, frame: Any) -> None:
        state.signalled = signum
        raise KeyboardInterrupt(f"signal {signum}")

    return interrupt


def as_interrupt(state: DryRunState | None, exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt to raise instead of ``exc``, when ``exc`` is (or follows) a signal."""
    if isinstance(exc, KeyboardInterrupt):
        return None  # pytest handles it as it is
    if is_interrupt(exc) or (state is not None and state.signalled is not None):
        signum = state.signalled if state is not None else None
        return KeyboardInterrupt(f"signal {signum}: {type(exc).__name__}: {exc}")
    return None


Handlers = dict[signal.Signals, Any]


def install_handlers(state: DryRunState) -> Handlers | None:
    """SIGTERM (a cancelled CI job) ends the run like Ctrl-C: the local stack is stopped and an
    interrupted NO-GO is written, in remote mode too. Both signals are noted on the run's state,
    so a signal a library turned into its own error still ends the run as interrupted. Returns
    the handlers they replace (``restore_handlers``); None off the main thread, where Python
    sets no handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    handler = interrupt_handler(state)
    return {sig: signal.signal(sig, handler) for sig in SIGNALS}


def defer_signals(state: DryRunState, installed: bool) -> None:
    """While the evidence is written, a SIGTERM (and Ctrl-C, where ``install_handlers`` ran and
    ``restore_handlers`` puts pytest's back) is noted instead of cutting it short."""
    if threading.current_thread() is not threading.main_thread():
        return

    def note(signum: int, frame: Any) -> None:
        state.terminal_notes.append(f"signal {signum} received while writing the evidence")

    for sig in SIGNALS if installed else (signal.SIGTERM,):
        signal.signal(sig, note)


def restore_handlers(previous: Handlers | None) -> None:
    """Put back the handlers ``install_handlers`` replaced."""
    if previous is not None and threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            signal.signal(sig, handler)
