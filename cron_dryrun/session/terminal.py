"""The terminal: a redacted line now, a ticking elapsed time, and every write redacted.

The one place that reaches pytest's terminal writer. pytest exposes no public way to filter
what its terminal reporter writes, nor to ask whether the cursor is mid-line: both go through
``TerminalReporter._tw`` (its ``TerminalWriter``), a private attribute, read here only and
always with ``getattr`` so that a pytest without it leaves the output as pytest makes it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from cron_dryrun.redaction import escape_controls, escape_terminal

Redact = Callable[[str], str]

_REDACTS = "_cron_dryrun_redacts"  # marks a writer already wrapped


def terminal_writer(reporter: Any) -> Any:
    """pytest's TerminalWriter behind the reporter (private: see the module's docstring)."""
    return getattr(reporter, "_tw", None)


def terminal_line(config: pytest.Config, redact: Callable[[], Redact]) -> Callable[[str], None]:
    """Write one redacted line to the terminal now, even while pytest captures output;
    ``redact`` returns the run's redactor at the time of writing."""

    def say(message: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            # on a line of its own: after pytest's progress dots (-q), never inside them
            if getattr(terminal_writer(reporter), "width_of_current_line", 0):
                reporter.line("")
            reporter.write_line(f"cron-dryrun: {redact()(message)}")
            reporter.flush()

    return say


def terminal_tick(config: pytest.Config) -> Callable[[str], None] | None:
    """On a terminal: redraw the current line in place (the elapsed time); else None."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not getattr(reporter, "isatty", False):
        return None
    capture = config.pluginmanager.get_plugin("capturemanager")

    def tick(text: str) -> None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write(f"\r{text:<78}\r" if not text else f"\r{text:<78}", flush=True)

    return tick


def redact_terminal_writer(
    reporter: Any, engaged: Callable[[], bool], redact: Callable[[], Redact]
) -> bool:
    """Pass everything the terminal reporter writes through the run's redactor while
    ``engaged()`` (a session without dryrun tests is left as pytest writes it). False when
    there is no writer, or it is wrapped already."""
    writer = terminal_writer(reporter)
    if writer is None or getattr(writer, _REDACTS, False):
        return False
    write = writer.write

    def redacting_write(msg: str, *, flush: bool = False, **markup: bool) -> None:
        # a response's control characters never reach the screen (ESC[2J, ESC[H ...); pytest's
        # own colour codes are kept only where it colours (a terminal)
        if not engaged():
            write(msg, flush=flush, **markup)
            return
        text = redact()(msg)
        shown = escape_terminal(text) if writer.hasmarkup else escape_controls(text)
        write(shown, flush=flush, **markup)

    writer.write = redacting_write
    setattr(writer, _REDACTS, True)
    return True
