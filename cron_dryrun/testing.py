"""The public API of the acceptance modules: the types and helpers a check imports.

A check gets its data from the plugin's fixtures (``dryrun_state``, ``dryrun_target``,
``evidence``, ``cron_run``...) and judges it with a pure rule from ``rules.checks``; what it
needs besides lives here. This module never imports the pytest plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cron_dryrun.session.state import DryRunState, Target
from cron_dryrun.session.trigger import rerun_once, trigger_and_observe

if TYPE_CHECKING:
    from cron_dryrun.evidence import EvidenceWriter

__all__ = ["DryRunState", "Evidence", "Target", "fail_if", "rerun_once", "trigger_and_observe"]


class Evidence:
    """Per-test handle: attach text to the HTML report, record facts for the run summary."""

    def __init__(self, state: DryRunState, nodeid: str) -> None:
        self._state = state
        self._nodeid = nodeid

    def attach(self, title: str, text: str) -> None:
        """Attach ``text`` to this check in the HTML report, cut to bounds.MAX_ATTACHMENT_CHARS
        (the cut says how much): a hostile answer cannot make a 400 MB report."""
        from cron_dryrun.bounds import truncated

        # cut before it is held; redacted when it goes into the report (_attach_html_extras)
        self._state.attachments.setdefault(self._nodeid, []).append((title, truncated(text)))

    def attach_html(self, fragment: str) -> None:
        """Inline HTML evidence for the report (a table, a picture); text goes through
        ``attach``. The fragment is redacted like every other byte of the report."""
        self._state.html_attachments.setdefault(self._nodeid, []).append(fragment)

    def record(self, name: str, value: object) -> None:
        self._state.records[name] = value

    @property
    def writer(self) -> EvidenceWriter:
        """The evidence writer: redacts, writes atomically, never overwrites with write_new."""
        from cron_dryrun.session.finish import writer_for

        return writer_for(self._state)


def fail_if(problem: str | None) -> None:
    """Fail the calling check with the judging rule's message, without a Python traceback."""
    __tracebackhide__ = True
    if problem:
        pytest.fail(problem, pytrace=False)
