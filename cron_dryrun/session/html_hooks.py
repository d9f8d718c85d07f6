"""Everything pytest-html: the report's path, its title, the verdict in its summary, the
evidence in each row, and its "Generated html report" line.

``HtmlReport`` is registered by the session only when pytest-html is active (its hooks are
unknown to pytest otherwise) and uses pytest-html's public hooks and the documented
``report.extras``. One thing has no public way: the report is written to a temp file and
copied into the audit folder redacted, and pytest-html prints its path from the private
``_report_path`` of its report object; ``point_message_at`` rewrites it, so pyproject.toml
pins pytest-html to the versions this was tested with.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cron_dryrun.redaction import escape_controls

if TYPE_CHECKING:
    from cron_dryrun.session.dryrun_session import DryRunSession

PLUGIN_NAME = "cron_dryrun_html"


def html_active(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("html")


class HtmlReport:
    """pytest-html's side of a dry run (a plugin object: its methods are hooks)."""

    def __init__(self, session: DryRunSession) -> None:
        self.session = session

    def use_temp_report(self, config: pytest.Config) -> None:
        """Have pytest-html write a self-contained report to a temp file; it is copied into
        the audit folder through the evidence writer (redacted) when the session ends."""
        # pytest-html reads --html in its own pytest_configure, which runs after this one
        # (the plugin's is tryfirst)
        if getattr(config.option, "htmlpath", None):
            return  # the operator chose a path: leave it to pytest-html
        state = self.session.state
        temp = Path(tempfile.mkdtemp(prefix="cron-dryrun-html-")) / "report.html"
        config.option.htmlpath = str(temp)
        config.option.self_contained_html = True
        state.html_temp_path = temp
        state.html_temp_dir = temp.parent
        state.artefacts["report"] = state.settings.audit_dir / "report.html"

    def pytest_html_report_title(self, report: Any) -> None:
        if not self.session.engaged:  # asked at session start, before collection
            return
        state = self.session.state
        report.title = self.session.redact(f"cron-dryrun gate: {state.settings.target_name}")

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str]
    ) -> None:
        from cron_dryrun.session import reporting

        state = self.session.state
        # the operator's own --html: no banner at the top
        if self.session.engaged and state.html_temp_path is None:
            # pytest-html writes the operator's file itself, past the evidence writer: the
            # verdict block (reasons, root cause) is redacted here
            redact = self.session.redact
            prefix.extend(redact(block) for block in reporting.html_verdict_block(state))

    def attach_extras(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """The check's evidence, inline in its row's details (``report.extras``, which
        pytest-html reads), never a data: link (which Chromium opens as a blank tab)."""
        from pytest_html import extras

        from cron_dryrun.evidence.html_report import evidence_block

        state = self.session.state
        attached = state.attachments.get(item.nodeid, [])
        fragments = state.html_attachments.get(item.nodeid, [])
        if not attached and not fragments:
            return
        redact = self.session.redact
        existing = list(getattr(report, "extras", []))
        for title, text in attached:
            block = evidence_block(escape_controls(title), escape_controls(redact(text)))
            existing.append(extras.html(block))
        for fragment in fragments:
            existing.append(extras.html(escape_controls(redact(fragment))))
        report.extras = existing  # type: ignore[attr-defined]  # pytest-html reads this attribute

    def point_message_at(self, config: pytest.Config, temp: Path, final: Path) -> None:
        """pytest-html prints "Generated html report: <path>" after the copy, when the temp
        file is gone: point it at the copy in the audit folder (private ``_report_path``)."""
        for plugin in config.pluginmanager.get_plugins():
            if str(getattr(plugin, "_report_path", "")) == str(temp):
                plugin._report_path = Path(final).resolve()
