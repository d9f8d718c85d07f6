"""The dry run's session object: created in ``pytest_configure``, kept in ``config.stash`` and
registered with pytest's plugin manager, its methods the session's hooks (the shape of
pytest's own ``LogXML``); unregistered at ``pytest_unconfigure``.

It holds the run's ``DryRunState`` and applies the gate: which tests are dryrun checks, the
preflight before anything is sent, each check's outcome, the verdict at the end, the evidence,
the exit status and the summary. Every report, collection error, log record and terminal
line is redacted while the session is a dry run; another project's session that collects no
dryrun test is left exactly as pytest makes it.

The evidence writer, the preflight and the root-cause rules are imported when a dry run
needs them: this module is loaded by every pytest run where cron-dryrun is installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from collections.abc import Callable, Generator, Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cron_dryrun.exchange.record import ExchangeMissing, RecordedRun
from cron_dryrun.redaction import escape_controls
from cron_dryrun.rules.gate import (
    REQUIRED_STEPS,
    CheckOutcome,
    decide,
    first_line,
    stopped_before_trigger,
)
from cron_dryrun.session import interrupts
from cron_dryrun.session.html_hooks import PLUGIN_NAME as HTML_PLUGIN_NAME
from cron_dryrun.session.html_hooks import HtmlReport, html_active
from cron_dryrun.session.pytest_outputs import RunRedaction, redact_log_handlers
from cron_dryrun.session.state import DryRunState, Target
from cron_dryrun.session.terminal import redact_terminal_writer, terminal_line, terminal_tick
from cron_dryrun.session.trigger import trigger_and_observe

if TYPE_CHECKING:
    from cron_dryrun.session.preflight import Preflight
    from cron_dryrun.target.client import CronClient, Transcript

PLUGIN_NAME = "cron_dryrun_session"
Redact = Callable[[str], str]


class DryRunSession:
    """One pytest session's dry run (a plugin object: its methods are hooks)."""

    def __init__(
        self,
        config: pytest.Config,
        state: DryRunState,
        *,
        wants_dryrun: bool,
        run_redaction: RunRedaction,
        settings_error: str | None = None,
    ) -> None:
        self.config = config
        self.state = state
        # the invocation aims at the acceptance suite (session.invocation.wants_dryrun)
        self.wants_dryrun = wants_dryrun
        # a bad setting in a session that may hold no dryrun test: raised only when one is
        # collected
        self.settings_error = settings_error
        self.run_redaction = run_redaction
        run_redaction.current = self.redaction
        self.signal_handlers: interrupts.Handlers | None = None
        self.html: HtmlReport | None = None

    # -- lifetime: registered at configure, unregistered at unconfigure ----------------------

    def register(self) -> None:
        config = self.config
        if self.wants_dryrun:
            self.signal_handlers = interrupts.install_handlers(self.state)
        if html_active(config):  # its hooks are unknown to pytest otherwise
            self.html = HtmlReport(self)
            # --collect-only runs nothing: no report, and no "Generated html report" line
            # pointing at a temp file
            if self.wants_dryrun and not config.option.collectonly:
                self.html.use_temp_report(config)
            config.pluginmanager.register(self.html, HTML_PLUGIN_NAME)
        config.pluginmanager.register(self, PLUGIN_NAME)

    def close(self) -> None:
        """Restore the signal handlers; copy the HTML report where the terminal summary did
        not run (no terminal reporter); leave the plugin manager."""
        interrupts.restore_handlers(self.signal_handlers)
        state = self.state
        if state.active and state.verdict is not None:
            self.finish_html()
        if self.html is not None:
            self.config.pluginmanager.unregister(self.html)
        if state.html_temp_dir is not None and not state.html_temp_kept:
            shutil.rmtree(state.html_temp_dir, ignore_errors=True)
        self.config.pluginmanager.unregister(self)

    # -- what the fixtures and hooks share -----------------------------------------------------

    @property
    def engaged(self) -> bool:
        """Whether this session is a dry run (so its output is redacted and bounded)."""
        return self.state.active or self.wants_dryrun

    def redaction(self) -> Redact:
        """The run's redactor now (it grows as secrets become known: the local stack's)."""
        from cron_dryrun.session.finish import writer_for

        return writer_for(self.state).redactor.redact

    def redact(self, text: str) -> str:
        return self.redaction()(text)

    def say(self, message: str) -> None:
        """One redacted line on the terminal now, even while pytest captures output."""
        terminal_line(self.config, self.redaction)(message)

    def request_leaving(self, label: str) -> None:
        """Before each request to the cron: the first one marks gate.json in progress."""
        state = self.state
        if state.requests_sent == 0:  # the run's first write: gate.json says it is in progress
            from cron_dryrun.session import finish, reporting

            finish.mark_in_progress(state, reporting.gate_document)
        state.requests_sent += 1

    def record_exchange(self, transcript: Transcript) -> None:
        """Every exchange with the cron, kept for the report and appended to the smoke log now."""
        state = self.state
        state.transcripts.append(transcript)
        if state.smoke is None:
            from cron_dryrun.evidence.smoke_log import SmokeLog
            from cron_dryrun.session.finish import writer_for

            state.smoke = SmokeLog(writer_for(state), transcript.started_at)
        state.smoke.append(transcript)

    # -- what the fixtures ask of the session --------------------------------------------------

    def local_preflight(self, target: Target) -> Preflight:
        """The preflight's findings: from collection in remote mode (where a failure stopped
        the run before anything was sent), else run now against the local stack."""
        state = self.state
        found = state.preflight
        if found is not None and found.complete:
            return found
        from cron_dryrun.session import preflight

        result = preflight.run_preflight(
            cron_url=target.cron_url,
            secret=target.secret,
            database_dsn=target.database_dsn,
            exports=None if state.settings.openai_usage == "api" else target.exports,
            audit_dir=state.settings.audit_dir,
        )
        state.preflight = result
        return result

    def fetch_usage(self, target: Target, now: datetime) -> tuple[Path, ...]:
        """--openai-usage=api: the usage API's pages for the run's days, fetched into the
        audit folder (one folder per organisation, the pages in the run's manifest). A
        refused key or an exhausted retry fails the asking check with the API's reason."""
        from cron_dryrun.session.finish import writer_for
        from cron_dryrun.session.usage_fetch import UsageFetchError, fetch_usage_for_run

        state = self.state
        assert target.openai_url is not None
        writer = writer_for(state)
        try:
            fetched = fetch_usage_for_run(
                writer, state.run_id, target.admin_keys, target.openai_url, now
            )
        except UsageFetchError as exc:
            pytest.fail(writer.redactor.redact(str(exc)), pytrace=False)
        state.own_artefacts.extend(writer.path(p) for p in fetched.pages)
        state.artefacts["openai usage"] = writer.path(fetched.root)
        state.terminal_notes.extend(fetched.lines)
        return tuple(writer.path(f) for f in fetched.folders)

    def cron_client(self, target: Target) -> CronClient:
        """The client that triggers the cron: each request counted before it leaves, each
        exchange recorded, and watched on the terminal."""
        from cron_dryrun.session.finish import run_secret_values
        from cron_dryrun.target.client import CronClient
        from cron_dryrun.target.tls import client_context
        from cron_dryrun.target.watch import TerminalWatch

        settings = self.state.settings
        return CronClient(
            known_secrets=run_secret_values(self.state),  # an answer's excerpt: redacted, then cut
            on_request=self.request_leaving,
            on_exchange=self.record_exchange,
            url=target.cron_url,
            secret=target.secret,
            verify=client_context(settings.ca_bundle, settings.ssl_cert_file),
            watch=TerminalWatch(
                terminal_line(self.config, self.redaction), terminal_tick(self.config)
            ),
            bypass_secret=settings.vercel_bypass_secret,
            method=settings.cron_method,
            timeout_s=settings.cron_timeout,
        )

    def trigger_main(self, client: CronClient, target: Target) -> RecordedRun:
        """The one shared trigger of the session, with what the database saw around it."""
        from cron_dryrun.session.finish import previous_manual_fallback_windows

        state = self.state
        with contextlib.suppress(Exception):  # a corrupt ledger is reported by the ledger status
            state.previous_manual_fallback_windows = previous_manual_fallback_windows(
                state.settings.audit_dir, state.settings.target_name
            )
        state.run = trigger_and_observe(client, target, state, label="main exchange")
        return state.run

    # -- collection: the gate applies when dryrun checks are selected ------------------------

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """Remember every dryrun test a module holds, before -k, -m or a node id deselects any."""
        for node in report.result:
            if not isinstance(node, pytest.Item):
                continue
            step = step_of(node)
            if step is not None:
                self.state.collected.setdefault(step, set()).add(node.nodeid)

    def pytest_collection_modifyitems(
        self, session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        state = self.state
        settings = state.settings
        if not settings.allow_destructive:
            kept = [i for i in items if i.get_closest_marker("destructive") is None]
            dropped = [i for i in items if i.get_closest_marker("destructive") is not None]
            if dropped:
                config.hook.pytest_deselected(items=dropped)
                items[:] = kept
        if any(i.get_closest_marker("dryrun") for i in items):
            if self.settings_error:
                raise pytest.UsageError(f"{self.settings_error}\nNothing was triggered.")
            state.active = True
            local_problem = settings.local_stack_problem()
            if not local_problem and not settings.is_remote:
                from cron_dryrun.target.providers import backend_problem

                local_problem = backend_problem(settings.db_backend, settings.postgres_image)
            if local_problem:
                state.config_error = local_problem
                raise pytest.UsageError(f"cron-dryrun: {local_problem}\nNothing was triggered.")
            self._preflight()
        # Checks that only read the shared exchange run first; checks that trigger the cron
        # themselves (auth negatives, rerun) after them, so they cannot disturb what the
        # others judge; destructive ones last.
        items.sort(key=_phase)  # stable: file order within a phase

    def _preflight(self) -> None:
        """Remote mode: everything checkable without triggering, before the first request and
        the first audit file; any problem stops the run with all of them listed (exit 4)."""
        from cron_dryrun.session import preflight

        state = self.state
        settings = state.settings
        if settings.is_remote:
            assert settings.cron_url is not None
            result = preflight.run_preflight(
                cron_url=settings.cron_url,
                secret=settings.cron_secret,
                database_dsn=settings.database_url,
                exports=None if settings.openai_usage == "api" else settings.openai_export,
                audit_dir=settings.audit_dir,
                missing_configuration=settings.missing_remote_configuration(),
                db_connect_timeout_s=settings.db_connect_timeout,
                say=terminal_line(self.config, self.redaction),
                bypass_secret=settings.vercel_bypass_secret,
            )
        else:
            result = preflight.secret_only(
                settings.cron_secret, settings.audit_dir, settings.vercel_bypass_secret
            )
        state.preflight = result
        state.terminal_notes.extend(result.warnings)
        if not result.ok:
            redact = self.redaction()
            state.config_error = redact("; ".join(result.problems))
            raise pytest.UsageError(redact(preflight.failure_message(result, settings.target_name)))

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        """Collection errors (an import failing with a DSN in its message) are redacted too."""
        report = yield
        if report.longrepr is not None and self.engaged:
            redact_report(report, self.redaction())
        return report

    # -- the checks ------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Everything the terminal reporter prints goes through the redactor; so does every
        logging handler of the session (log file, live log, captured logs)."""
        pluginmanager = session.config.pluginmanager
        redact_log_handlers(pluginmanager, self.run_redaction)
        redact_terminal_writer(
            pluginmanager.get_plugin("terminalreporter"), lambda: self.engaged, self.redaction
        )

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Iterator[None]:
        """A signal during a fixture (a DuckDB query in parity's) interrupts the run too."""
        try:
            return (yield)
        except (
            Exception
        ) as exc:  # last resort: every failure is re-raised; an interrupt is told apart
            self._raise_if_interrupted(exc)
            raise

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Iterator[None]:
        """A check that cannot judge for want of the exchange fails with that sentence alone."""
        try:
            return (yield)
        except ExchangeMissing as exc:
            message = str(exc)
        except (
            Exception
        ) as exc:  # last resort: every failure is re-raised; an interrupt is told apart
            self._raise_if_interrupted(exc)
            raise
        # failed outside the except block: one message, not two joined by "During handling ..."
        pytest.fail(message, pytrace=False)

    def _raise_if_interrupted(self, exc: Exception) -> None:
        interrupt = interrupts.as_interrupt(self.state, exc)
        if interrupt is not None:
            raise interrupt from exc

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        state = self.state
        if self.engaged:
            # before the terminal, JUnit or pytest-html sees it: longrepr (-l locals and
            # function arguments included), captured sections, the crash line -rA prints
            redact_report(report, self.redaction())
        step = step_of(item)
        if step is None:
            return report
        status = _status(report)
        if status is not None:
            previous = state.outcomes.get(item.nodeid)
            if previous is None or previous.status == "passed":
                reason = (
                    escape_controls(self.redact(_reason(report, call)))
                    if status != "passed"
                    else ""
                )
                state.outcomes[item.nodeid] = CheckOutcome(item.nodeid, step, status, reason)
        wanted = report.when == "call" or (report.when == "setup" and not report.passed)
        if wanted and self.html is not None:
            self.html.attach_extras(item, report)
        return report

    # -- end of session: verdict, evidence, exit status --------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        state = self.state
        if not state.active:
            return
        if session.config.option.collectonly:
            state.active = False  # --collect-only: nothing ran, nothing is written
            return
        interrupts.defer_signals(state, installed=self.signal_handlers is not None)
        # a signal ends the run as interrupted even where a library swallowed it
        state.interrupted = (
            session.exitstatus == pytest.ExitCode.INTERRUPTED or state.signalled is not None
        )
        self._judge()
        from cron_dryrun.session.pytest_outputs import redact_metadata
        from cron_dryrun.session.reporting import describe_target

        redact_metadata(session.config, self.redaction(), describe_target(state))
        if state.config_error:
            # A failed preflight: nothing was triggered, so nothing is recorded (no ledger
            # line, smoke log, summary or notes). gate.json (the latest verdict, NO-GO with
            # the cause, so a CI job never reads a stale GO) and the HTML report say why, and
            # only into an audit folder the preflight found writable.
            if state.preflight is None or state.preflight.problems_in("audit folder"):
                state.html_temp_path = None
                state.artefacts.pop("report", None)
            else:
                self._write_run_evidence()
            return
        self._write_run_evidence()
        if state.interrupted:
            session.exitstatus = pytest.ExitCode.INTERRUPTED
        elif state.verdict is not None and not state.verdict.go and session.exitstatus == 0:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def _judge(self) -> None:
        """The verdict, and on NO-GO the one root cause behind several failing checks."""
        state = self.state
        cause = None
        if not state.triggered:
            if state.config_error:
                cause = f"configuration error: {state.config_error}"
            elif state.interrupted:
                cause = "interrupted (SIGTERM or Ctrl-C) before anything was triggered"
        if cause is not None:
            state.verdict = stopped_before_trigger(cause)
        else:
            extra = []
            if state.interrupted:
                extra.append(
                    "interrupted: the run was stopped (SIGTERM or Ctrl-C) before every check "
                    "had run; it is recorded as interrupted and never counts toward promotion"
                )
            state.verdict = decide(
                list(state.outcomes.values()), extra_reasons=extra, collected=state.collected
            )
        if not state.verdict.go:
            from cron_dryrun.rules.root_cause import (
                accepted_negatives,
                find_root_cause,
                signals_from_run,
            )
            from cron_dryrun.target.watch import AUTH_NEGATIVE

            accepted = accepted_negatives(
                ((t.label, t.status) for t in state.transcripts), AUTH_NEGATIVE
            )
            found = find_root_cause(
                signals_from_run(state.run, accepted),
                [(step.step, step.status) for step in state.verdict.steps],
                remote=state.settings.is_remote,
            )
            if found is not None:  # it quotes what the target sent: shown escaped everywhere
                found = dataclasses.replace(
                    found, cause=escape_controls(found.cause), fix=escape_controls(found.fix)
                )
            state.root_cause = found

    def _write_run_evidence(self) -> None:
        from cron_dryrun.session import finish, reporting

        finish.write_all(self.state, reporting.gate_document)
        finish.append_github_step_summary(self.state)

    @pytest.hookimpl(tryfirst=True)
    def pytest_terminal_summary(
        self, terminalreporter: Any, exitstatus: int, config: pytest.Config
    ) -> None:
        state = self.state
        if not state.active or state.verdict is None:
            return
        from cron_dryrun.session import finish, reporting

        self.finish_html()
        reporting.print_terminal_summary(terminalreporter, state, finish.github_annotations(state))

    def finish_html(self) -> None:
        """Copy pytest-html's finished report into audit/ (redacted) and point its message
        there; once, from the terminal summary or, without one, at unconfigure."""
        state = self.state
        if state.html_finished:
            return
        state.html_finished = True
        temp = state.html_temp_path
        from cron_dryrun.session import finish

        finish.finish_html(state)
        final = state.artefacts.get("report")
        if temp and final is not None and self.html is not None:
            self.html.point_message_at(self.config, temp, final)


def _phase(item: pytest.Item) -> int:
    """Read-only checks first, then those that trigger the cron themselves, destructive last."""
    if item.get_closest_marker("destructive"):
        return 2
    if item.get_closest_marker("triggers_cron"):
        return 1
    return 0


def step_of(item: pytest.Item) -> str | None:
    """The runbook step a dryrun check judges (its step marker); None for any other test."""
    if item.get_closest_marker("dryrun") is None:
        return None
    for marker in item.iter_markers():
        if marker.name in REQUIRED_STEPS:
            return marker.name
    return None


def _status(report: pytest.TestReport) -> str | None:
    """The check's status from one phase's report; None when the phase says nothing."""
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        return report.outcome
    if report.failed:
        return "error"
    if report.skipped and report.when == "setup":
        return "skipped"
    return None


def _reason(report: pytest.TestReport, call: pytest.CallInfo[None]) -> str:
    if call.excinfo is not None:
        value = call.excinfo.value
        text = getattr(value, "msg", None) or str(value) or call.excinfo.typename
        return first_line(f"{text}", limit=None)
    if isinstance(report.longrepr, tuple):
        return first_line(str(report.longrepr[2]), limit=None)
    return first_line(str(report.longrepr or ""), limit=None)


def redact_report(report: pytest.TestReport | pytest.CollectReport, redactor: Redact) -> None:
    """Redact, and bound each string (a -vv -l repr of a huge body is one string)."""
    from cron_dryrun.bounds import truncated
    from cron_dryrun.redaction import redact_in_place

    def redact(text: str) -> str:
        return truncated(text, transform=lambda t: escape_controls(redactor(t)))

    longrepr = report.longrepr
    if longrepr is not None:
        report.longrepr = redact_in_place(longrepr, redact)
        extra = getattr(longrepr, "sections", None)  # ExceptionRepr.sections: not a field
        if isinstance(extra, list):
            redact_in_place(extra, redact)
    report.sections = [(redact(title), redact(text)) for title, text in report.sections]
