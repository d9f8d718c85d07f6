"""The pytest plugin: options, fixtures, the shared exchange, the gate verdict, evidence.

Hooks and fixtures only: the judging rules live in ``rules`` and ``parity``, the run's
state and end-of-run output in ``session``, every file in ``evidence``. Nothing imports
this module (an import-linter contract): the acceptance modules use ``cron_dryrun.testing``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import secrets
import signal
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from cron_dryrun.config.settings import OPTIONS, Settings, SettingsError, resolve_settings
from cron_dryrun.exchange.record import ExchangeMissing, RecordedRun
from cron_dryrun.redaction import escape_controls, escape_terminal
from cron_dryrun.rules.gate import (
    REQUIRED_STEPS,
    CheckOutcome,
    decide,
    first_line,
    stopped_before_trigger,
)
from cron_dryrun.rules.markers import marker_lines
from cron_dryrun.session.state import DryRunState, Target
from cron_dryrun.session.trigger import trigger_and_observe
from cron_dryrun.testing import Evidence

if TYPE_CHECKING:
    from cron_dryrun.session.preflight import Preflight
    from cron_dryrun.target.client import CronClient, Transcript

# psycopg, httpx and the evidence writer are imported where they are used: this module
# is loaded by every pytest run in an environment that has cron-dryrun installed.

OPTIONS_BY_FLAG = {spec.flag: spec for spec in OPTIONS if spec.flag}

SETTINGS_KEY = pytest.StashKey[Settings]()
# a bad setting in a session that may hold no dryrun test: raised only when one is collected
SETTINGS_ERROR_KEY = pytest.StashKey[str]()
STATE_KEY = pytest.StashKey["DryRunState"]()


class RedactedDsn(str):
    """A DSN that shows no userinfo when pytest prints a fixture's value in a traceback."""

    def __repr__(self) -> str:
        from cron_dryrun.redaction import redact_dsn

        return repr(redact_dsn(str(self)))


# -- options --------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cron-dryrun", "daily usage cron dry run (env variables in brackets)")
    from cron_dryrun.config.option_help import help_text as option_help
    from cron_dryrun.config.option_help import metavar

    for spec in OPTIONS:
        help_text = option_help(spec)
        if spec.flag:
            dest = f"cron_dryrun_{spec.name}"
            if spec.is_flag:
                group.addoption(
                    spec.flag, action="store_true", default=False, dest=dest, help=help_text
                )
            else:
                group.addoption(
                    spec.flag,
                    action="append" if spec.multiple else "store",
                    default=None,
                    dest=dest,
                    help=help_text,
                    metavar=metavar(spec),
                )
        ini_type: Literal["linelist", "bool", "string"] = (
            "linelist" if spec.multiple else ("bool" if spec.is_flag else "string")
        )
        parser.addini(spec.ini, help=help_text, type=ini_type, default=None)


def _ini_values(config: pytest.Config) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for spec in OPTIONS:
        try:
            value = config.getini(spec.ini)
        except ValueError:
            value = None
        values[spec.name] = value if value not in ("", []) else None
    return values


# Options whose value is a path: pytest picks the rootdir (and so its ini file) before plugin
# options are known, so `--audit-dir /existing/dir` is first read as a test path.
PATH_OPTIONS = ("--audit-dir", "--openai-export")


def path_value_read_as_test_path(args: list[str], ini_found: bool) -> str | None:
    """The message for a path option given as two words that cost the run its ini file."""
    if ini_found:
        return None
    for flag, value in itertools.pairwise(args):
        if flag in PATH_OPTIONS and Path(value).exists():
            env = OPTIONS_BY_FLAG[flag].env
            return (
                f"cron-dryrun: `{flag} {value}` was read by pytest as a test path before the plugin "
                f"was loaded, so no ini file (markers, addopts) was found; write `{flag}={value}` "
                f"or set {env}={value}"
            )
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for line in marker_lines():  # the plugin's markers: --strict-markers in any project
        config.addinivalue_line("markers", line)
    from cron_dryrun.session.pytest_outputs import redact_debug_trace

    redact_debug_trace(config.trace.root, _current_redaction(config))  # --debug, from its start
    problem = path_value_read_as_test_path(
        list(config.invocation_params.args), config.inipath is not None
    )
    if problem:
        raise pytest.UsageError(problem)
    cli = {
        spec.name: config.getoption(f"cron_dryrun_{spec.name}", None)
        for spec in OPTIONS
        if spec.flag
    }
    try:
        settings = resolve_settings(cli=cli, env=os.environ, ini=_ini_values(config))
    except SettingsError as exc:
        if _wants_dryrun(config) or any(v not in (None, False, []) for v in cli.values()):
            raise pytest.UsageError(f"cron-dryrun: {exc}") from None
        # another project's session (its own DATABASE_URL, say) is not stopped by our settings
        config.stash[SETTINGS_ERROR_KEY] = f"cron-dryrun: {exc}"
        settings = Settings()
    if settings.ca_bundle or settings.ssl_cert_file:
        from cron_dryrun.target.tls import CaBundleError, client_context

        try:
            client_context(settings.ca_bundle, settings.ssl_cert_file)
        except CaBundleError as exc:
            raise pytest.UsageError(f"cron-dryrun: {exc}") from None
    xdist = _xdist_problem(config)
    if xdist:
        raise pytest.UsageError(xdist)
    config.stash[SETTINGS_KEY] = settings
    state = DryRunState(settings=settings)
    config.stash[STATE_KEY] = state
    if _wants_dryrun(config):
        _sigterm_as_interrupt(config)
    _configure_html_report(config, settings, state)
    if config.pluginmanager.hasplugin("html"):
        config.pluginmanager.register(_HtmlHooks(config), "cron_dryrun_html")


def _xdist_active(config: pytest.Config) -> bool:
    """pytest-xdist distributes this session, or this is one of its workers: read from the
    options and the plugin manager, however xdist was started (-n, --dist, --tx, -p xdist)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return False
    return bool(
        config.getoption("numprocesses", None)
        or config.getoption("tx", None)
        or config.getoption("dist", "no") not in (None, "no")
        or config.pluginmanager.hasplugin("dsession")
        or hasattr(config, "workerinput")
        or os.environ.get("PYTEST_XDIST_WORKER")
    )


def _xdist_problem(config: pytest.Config) -> str | None:
    """pytest-xdist would run the acceptance suite once per worker: each triggers the cron."""
    if not _wants_dryrun(config) or not _xdist_active(config):
        return None
    return (
        "cron-dryrun: the acceptance suite cannot run under pytest-xdist (-n / --dist / -p xdist): "
        "the cron must be triggered once per run and every check judges that one exchange, but "
        "each xdist worker would trigger it again and write its own verdict. Nothing was "
        "triggered. Drop -n (or pass -p no:xdist)."
    )


def _engaged(config: pytest.Config, state: DryRunState) -> bool:
    """Whether this session is a dry run (so its output is redacted and bounded); another
    project's session that collects no dryrun test is left exactly as pytest makes it."""
    return state.active or _wants_dryrun(config)


def _wants_dryrun(config: pytest.Config) -> bool:
    """Whether this invocation aims at the acceptance suite (decided before collection): -m
    dryrun, or a path that is in, or holds, an ``acceptance`` folder once resolved (so
    ``cd acceptance && pytest .`` is one too)."""
    markexpr = config.getoption("markexpr", "") or ""
    if "dryrun" in markexpr and "not dryrun" not in markexpr:
        return True
    base = config.invocation_params.dir
    for arg in config.args:
        path = (base / str(arg).split("::", 1)[0]).resolve()
        if "acceptance" in path.parts or (path.is_dir() and (path / "acceptance").is_dir()):
            return True
    return False


def _configure_html_report(config: pytest.Config, settings: Settings, state: DryRunState) -> None:
    """Have pytest-html write a self-contained report to a temp file; it is copied into the
    audit folder through the evidence writer (redacted) when the session ends."""
    # pytest-html reads --html in its own pytest_configure, which runs after this tryfirst hook.
    if not config.pluginmanager.hasplugin("html") or not _wants_dryrun(config):
        return
    if getattr(config.option, "htmlpath", None):
        return  # the operator chose a path: leave it to pytest-html
    temp = Path(tempfile.mkdtemp(prefix="cron-dryrun-html-")) / "report.html"
    config.option.htmlpath = str(temp)
    config.option.self_contained_html = True
    state.html_temp_path = temp
    state.artefacts["report"] = settings.audit_dir / "report.html"


# -- collection: the gate applies when dryrun checks are selected ---------------------------------


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Remember every dryrun test a module holds, before -k, -m or a node id deselects any."""
    for node in report.result:
        if not isinstance(node, pytest.Item):
            continue
        step = _step_of(node)
        state = node.config.stash.get(STATE_KEY, None)
        if step is not None and state is not None:
            state.collected.setdefault(step, set()).add(node.nodeid)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    state = config.stash[STATE_KEY]
    settings = state.settings
    if not settings.allow_destructive:
        kept = [i for i in items if i.get_closest_marker("destructive") is None]
        dropped = [i for i in items if i.get_closest_marker("destructive") is not None]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
    if any(i.get_closest_marker("dryrun") for i in items):
        settings_error = config.stash.get(SETTINGS_ERROR_KEY, None)
        if settings_error:
            raise pytest.UsageError(f"{settings_error}\nNothing was triggered.")
        state.active = True
        local_problem = settings.local_stack_problem()
        if not local_problem and not settings.is_remote:
            from cron_dryrun.target.providers import backend_problem

            local_problem = backend_problem(settings.db_backend, settings.postgres_image)
        if local_problem:
            state.config_error = local_problem
            raise pytest.UsageError(f"cron-dryrun: {local_problem}\nNothing was triggered.")
        _preflight(config, state)

    # Checks that only read the shared exchange run first; checks that trigger the cron
    # themselves (auth negatives, rerun) after them, so they cannot disturb what the
    # others judge; destructive ones last.
    def phase(item: pytest.Item) -> int:
        if item.get_closest_marker("destructive"):
            return 2
        if item.get_closest_marker("triggers_cron"):
            return 1
        return 0

    items.sort(key=phase)  # stable: file order within a phase


def _preflight(config: pytest.Config, state: DryRunState) -> None:
    """Remote mode: everything checkable without triggering, before the first request and the
    first audit file; any problem stops the run with all of them listed (exit 4)."""
    from cron_dryrun.session import preflight

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
            say=terminal_line(config, state),
            bypass_secret=settings.vercel_bypass_secret,
        )
    else:
        result = preflight.secret_only(
            settings.cron_secret, settings.audit_dir, settings.vercel_bypass_secret
        )
    state.preflight = result
    state.terminal_notes.extend(result.warnings)
    if not result.ok:
        redact = _redactor(state)
        state.config_error = redact("; ".join(result.problems))
        raise pytest.UsageError(redact(preflight.failure_message(result, settings.target_name)))


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dryrun_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved, frozen settings of this run."""
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def dryrun_state(pytestconfig: pytest.Config) -> DryRunState:
    return pytestconfig.stash[STATE_KEY]


def terminal_line(config: pytest.Config, state: DryRunState) -> Callable[[str], None]:
    """Write one redacted line to the terminal now, even while pytest captures output."""

    def say(message: str) -> None:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = config.pluginmanager.get_plugin("capturemanager")
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            # on a line of its own: after pytest's progress dots (-q), never inside them
            if getattr(getattr(reporter, "_tw", None), "width_of_current_line", 0):
                reporter.line("")
            reporter.write_line(f"cron-dryrun: {_redactor(state)(message)}")
            reporter.flush()

    return say


@pytest.fixture(scope="session")
def dryrun_target(
    pytestconfig: pytest.Config, dryrun_settings: Settings, dryrun_state: DryRunState
) -> Iterator[Target]:
    """Staging when CRON_URL is set; else the local stack (real PostgreSQL + stand-ins on loopback)."""
    s = dryrun_settings
    if s.is_remote:
        assert s.cron_url and s.cron_secret and s.database_url  # checked at collection
        from cron_dryrun.config.settings import DEFAULT_OPENAI_BASE_URL

        target = Target(
            s.cron_url,
            s.cron_secret,
            s.database_url,
            s.openai_export,
            False,
            "url",
            openai_url=s.openai_base_url or DEFAULT_OPENAI_BASE_URL,
            admin_keys=s.openai_admin_keys,
        )
        from cron_dryrun.target.db_wake import DatabaseWakeError, wake_database

        try:  # a suspended Neon compute wakes on the first connection
            wake_database(
                s.database_url, s.db_connect_timeout, say=terminal_line(pytestconfig, dryrun_state)
            )
        except DatabaseWakeError as exc:
            target.db_wake_error = str(exc)
        dryrun_state.target = target
        yield target
        return
    with ExitStack() as stack:
        from cron_dryrun.target import database as db
        from cron_dryrun.target import providers
        from cron_dryrun.target.pg_server import DatabaseUnavailable

        backend = providers.choose_backend(
            s.db_backend, s.database_url, providers.docker_engine_answers
        )
        if backend == "url":
            assert s.database_url
            server_dsn = s.database_url
            backend_name = "url"
        else:
            try:
                server = stack.enter_context(providers.provide_server(backend, s.postgres_image))
            except DatabaseUnavailable as exc:
                if s.db_backend != "auto" or backend != "testcontainers":
                    raise
                # auto picked Docker because an engine answered, but it could not start the
                # image (e.g. no registry): the embedded backend needs neither.
                dryrun_state.terminal_notes.append(
                    f"auto backend: testcontainers failed ({first_line(str(exc))}); used embedded instead"
                )
                server = stack.enter_context(providers.provide_server("embedded", s.postgres_image))
            server_dsn = server.dsn
            backend_name = server.backend
        app_dsn = db.create_app_database(server_dsn)
        stack.callback(db.drop_database, server_dsn, db.database_name(app_dsn))
        secret = s.cron_secret or secrets.token_urlsafe(24)
        dryrun_state.secrets.add(secret)
        export_dir = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="cron-dryrun-export-"))
        )

        from cron_dryrun.standin import start_local_stack

        local = stack.enter_context(
            start_local_stack(
                app_dsn,
                secret=secret,
                fault=s.fault,
                export_dir=export_dir,
                slow_delay_s=s.cron_timeout + 2.0,
                compress=s.standin_compress,
                bypass_secret=_standin_bypass(s, dryrun_state),
            )
        )
        exports = s.openai_export or tuple(local.export_paths)
        dryrun_state.secrets.add(local.admin_key)
        target = Target(
            local.cron_url,
            local.secret,
            app_dsn,
            exports,
            True,
            backend_name,
            openai_url=local.openai_url,
            admin_keys=(local.admin_key,),
        )
        dryrun_state.target = target
        yield target


def _standin_bypass(settings: Settings, state: DryRunState) -> str | None:
    """With --standin-protection, the secret the stand-in's edge lets through: the operator's
    VERCEL_AUTOMATION_BYPASS_SECRET, or one nobody was told (the run is then blocked)."""
    if not settings.standin_protection:
        return None
    secret = settings.vercel_bypass_secret or secrets.token_urlsafe(24)
    state.secrets.add(secret)
    return secret


SIGTERM_KEY = pytest.StashKey[Any]()


def _sigterm_as_interrupt(config: pytest.Config) -> None:
    """SIGTERM (a cancelled CI job) ends the run like Ctrl-C: the local stack is stopped and
    an interrupted NO-GO is written, in remote mode too. Both are noted on the run's state
    (session.interrupts), so a signal a library turned into its own error still ends the run
    as interrupted. Restored at unconfigure."""
    if threading.current_thread() is not threading.main_thread():
        return
    from cron_dryrun.session.interrupts import SIGNALS, interrupt_handler

    handler = interrupt_handler(config.stash[STATE_KEY])
    config.stash[SIGTERM_KEY] = {sig: signal.signal(sig, handler) for sig in SIGNALS}


def _defer_sigterm(config: pytest.Config, state: DryRunState) -> None:
    """While the evidence is written, a SIGTERM (and Ctrl-C, where the plugin installed its
    handlers and restores them at unconfigure) is noted instead of cutting it short."""
    if threading.current_thread() is not threading.main_thread():
        return
    from cron_dryrun.session.interrupts import SIGNALS

    def note(signum: int, frame: Any) -> None:
        state.terminal_notes.append(f"signal {signum} received while writing the evidence")

    for sig in SIGNALS if config.stash.get(SIGTERM_KEY, None) is not None else (signal.SIGTERM,):
        signal.signal(sig, note)


@pytest.fixture(scope="session")
def dryrun_preflight(dryrun_target: Target, dryrun_state: DryRunState) -> Preflight:
    """The preflight's findings: from collection in remote mode (where a failure stopped the
    run before anything was sent), else run now against the local stack."""
    found = dryrun_state.preflight
    if found is not None and found.complete:
        return found
    from cron_dryrun.session import preflight

    t = dryrun_target
    result = preflight.run_preflight(
        cron_url=t.cron_url,
        secret=t.secret,
        database_dsn=t.database_dsn,
        exports=None if dryrun_state.settings.openai_usage == "api" else t.exports,
        audit_dir=dryrun_state.settings.audit_dir,
    )
    dryrun_state.preflight = result
    return result


@pytest.fixture(scope="session")
def app_dsn(dryrun_target: Target) -> str:
    """DSN of the app's database. The suite only reads it (see ``database.read_only``)."""
    return RedactedDsn(dryrun_target.database_dsn)


@pytest.fixture(scope="session")
def openai_exports(
    dryrun_settings: Settings, dryrun_target: Target, dryrun_state: DryRunState
) -> tuple[Path, ...]:
    """The OpenAI usage export(s) the parity check reconciles against.

    With ``--openai-usage=api`` the usage API's pages for the run's days are fetched into
    ``telemetry-audit/usage-<run-id>/`` (one folder per organisation) and used as the export;
    the pages go into the run's manifest. A refused key or an exhausted retry fails the checks
    that need the export, with the API's reason.
    """
    if dryrun_settings.openai_usage != "api":
        return dryrun_target.exports
    from cron_dryrun.session.finish import writer_for
    from cron_dryrun.session.usage_fetch import UsageFetchError, fetch_usage_for_run

    assert dryrun_target.openai_url is not None
    writer = writer_for(dryrun_state)
    try:
        fetched = fetch_usage_for_run(
            writer,
            dryrun_state.run_id,
            dryrun_target.admin_keys,
            dryrun_target.openai_url,
            datetime.now(UTC),
        )
    except UsageFetchError as exc:
        pytest.fail(writer.redactor.redact(str(exc)), pytrace=False)
    dryrun_state.own_artefacts.extend(writer.path(p) for p in fetched.pages)
    dryrun_state.artefacts["openai usage"] = writer.path(fetched.root)
    dryrun_state.terminal_notes.extend(fetched.lines)
    return tuple(writer.path(f) for f in fetched.folders)


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


@pytest.fixture(scope="session")
def cron_client(
    pytestconfig: pytest.Config,
    dryrun_settings: Settings,
    dryrun_target: Target,
    dryrun_state: DryRunState,
) -> CronClient:
    from cron_dryrun.session.finish import run_secret_values
    from cron_dryrun.target.client import CronClient
    from cron_dryrun.target.tls import client_context
    from cron_dryrun.target.watch import TerminalWatch

    state = dryrun_state
    return CronClient(
        known_secrets=run_secret_values(state),  # an answer's excerpt: redacted, then cut
        on_request=lambda label: _request_leaving(state),
        on_exchange=lambda transcript: _record_exchange(state, transcript),
        url=dryrun_target.cron_url,
        secret=dryrun_target.secret,
        verify=client_context(dryrun_settings.ca_bundle, dryrun_settings.ssl_cert_file),
        watch=TerminalWatch(terminal_line(pytestconfig, dryrun_state), terminal_tick(pytestconfig)),
        bypass_secret=dryrun_settings.vercel_bypass_secret,
        method=dryrun_settings.cron_method,
        timeout_s=dryrun_settings.cron_timeout,
    )


@pytest.fixture(scope="session")
def cron_run(
    dryrun_settings: Settings,
    dryrun_target: Target,
    cron_client: CronClient,
    dryrun_state: DryRunState,
) -> RecordedRun:
    """The one shared trigger of the session, with what the database saw around it."""
    from cron_dryrun.session.finish import previous_manual_fallback_windows

    with contextlib.suppress(Exception):  # a corrupt ledger is reported by the ledger status
        dryrun_state.previous_manual_fallback_windows = previous_manual_fallback_windows(
            dryrun_settings.audit_dir, dryrun_settings.target_name
        )
    dryrun_state.run = trigger_and_observe(
        cron_client, dryrun_target, dryrun_state, label="main exchange"
    )
    return dryrun_state.run


def _request_leaving(state: DryRunState) -> None:
    if state.requests_sent == 0:  # the run's first write: gate.json says it is in progress
        from cron_dryrun.session import finish, reporting

        finish.mark_in_progress(state, reporting.gate_document)
    state.requests_sent += 1


def _record_exchange(state: DryRunState, transcript: Transcript) -> None:
    """Every exchange with the cron, kept for the report and appended to the smoke log now."""
    state.transcripts.append(transcript)
    if state.smoke is None:
        from cron_dryrun.evidence.smoke_log import SmokeLog
        from cron_dryrun.session.finish import writer_for

        state.smoke = SmokeLog(writer_for(state), transcript.started_at)
    state.smoke.append(transcript)


@pytest.fixture
def evidence(request: pytest.FixtureRequest, dryrun_state: DryRunState) -> Evidence:
    return Evidence(dryrun_state, request.node.nodeid)


# -- outcomes -------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A check that cannot judge for want of the exchange fails with that sentence alone."""
    try:
        return (yield)
    except ExchangeMissing as exc:
        message = str(exc)
    except Exception as exc:  # last resort: every failure is re-raised; an interrupt is told apart
        _raise_if_interrupted(item, exc)
        raise
    # failed outside the except block: one message, not two joined by "During handling ..."
    pytest.fail(message, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """A signal during a fixture (a DuckDB query in parity's) interrupts the run too."""
    try:
        return (yield)
    except Exception as exc:  # last resort: every failure is re-raised; an interrupt is told apart
        _raise_if_interrupted(item, exc)
        raise


def _raise_if_interrupted(item: pytest.Item, exc: Exception) -> None:
    from cron_dryrun.session.interrupts import as_interrupt

    interrupt = as_interrupt(item.config.stash.get(STATE_KEY, None), exc)
    if interrupt is not None:
        raise interrupt from exc


def _step_of(item: pytest.Item) -> str | None:
    if item.get_closest_marker("dryrun") is None:
        return None
    for marker in item.iter_markers():
        if marker.name in REQUIRED_STEPS:
            return marker.name
    return None


def _reason(report: pytest.TestReport, call: pytest.CallInfo[None]) -> str:
    if call.excinfo is not None:
        value = call.excinfo.value
        text = getattr(value, "msg", None) or str(value) or call.excinfo.typename
        return first_line(f"{text}", limit=None)
    if isinstance(report.longrepr, tuple):
        return first_line(str(report.longrepr[2]), limit=None)
    return first_line(str(report.longrepr or ""), limit=None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    state = item.config.stash.get(STATE_KEY, None)
    if state is not None and _engaged(item.config, state):
        # before the terminal, JUnit or pytest-html sees it: longrepr (-l locals and
        # function arguments included), captured sections, the crash line -rA prints
        _redact_report(report, _redactor(state))
    step = _step_of(item)
    if state is None or step is None:
        return report
    status = None
    if report.when == "call":
        if hasattr(report, "wasxfail"):
            status = "xfailed" if report.skipped else "xpassed"
        else:
            status = report.outcome
    elif report.failed:
        status = "error"
    elif report.skipped and report.when == "setup":
        status = "skipped"
    if status is not None:
        previous = state.outcomes.get(item.nodeid)
        if previous is None or previous.status == "passed":
            reason = (
                escape_controls(_redactor(state)(_reason(report, call)))
                if status != "passed"
                else ""
            )
            state.outcomes[item.nodeid] = CheckOutcome(item.nodeid, step, status, reason)
    if report.when == "call" or (report.when == "setup" and not report.passed):
        _attach_html_extras(item, report, state)
    return report


def _attach_html_extras(item: pytest.Item, report: pytest.TestReport, state: DryRunState) -> None:
    try:
        from pytest_html import extras
    except ImportError:
        return
    from cron_dryrun.evidence.html_report import evidence_block

    redact = _redactor(state)
    attached = state.attachments.get(item.nodeid, [])
    fragments = state.html_attachments.get(item.nodeid, [])
    if not attached and not fragments:
        return
    existing = list(getattr(report, "extras", []))
    # inline in the row's details, never a data: link (which Chromium opens as a blank tab)
    for title, text in attached:
        block = evidence_block(escape_controls(title), escape_controls(redact(text)))
        existing.append(extras.html(block))
    for fragment in fragments:
        existing.append(extras.html(escape_controls(redact(fragment))))
    report.extras = existing  # type: ignore[attr-defined]  # pytest-html reads this attribute


def _redactor(state: DryRunState) -> Callable[[str], str]:
    from cron_dryrun.session.finish import writer_for

    return writer_for(state).redactor.redact


def _current_redaction(config: pytest.Config) -> Callable[[], Callable[[str], str]]:
    """The run's redactor when there is one yet, else the secrets of the environment and the
    command line (what pytest writes before, or without, resolved settings)."""
    from cron_dryrun.session.pytest_outputs import early_redactor

    early: list[Callable[[str], str]] = []

    def current() -> Callable[[str], str]:
        state = config.stash.get(STATE_KEY, None)
        if state is not None:
            return _redactor(state)
        if not early:
            cli = {
                n: config.getoption(f"cron_dryrun_{n}", None) for n in ("database_url", "cron_url")
            }
            early.append(early_redactor(os.environ, cli).redact)
        return early[0]

    return current


def _redact_report(report: pytest.TestReport | pytest.CollectReport, redactor: Any) -> None:
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


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Collection errors (an import failing with a DSN in its message) are redacted too."""
    report = yield
    state = collector.config.stash.get(STATE_KEY, None)
    if state is not None and report.longrepr is not None and _engaged(collector.config, state):
        _redact_report(report, _redactor(state))
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Everything the terminal reporter prints goes through the redactor; so does every
    logging handler of the session (log file, live log, captured logs)."""
    from cron_dryrun.session.pytest_outputs import redact_log_handlers

    redact_log_handlers(session.config.pluginmanager, _current_redaction(session.config))
    state = session.config.stash.get(STATE_KEY, None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    writer = getattr(reporter, "_tw", None)
    if state is None or writer is None or getattr(writer, "_cron_dryrun_redacts", False):
        return
    write = writer.write

    config = session.config

    def redacting_write(msg: str, *, flush: bool = False, **markup: bool) -> None:
        # a response's control characters never reach the screen (ESC[2J, ESC[H ...); pytest's
        # own colour codes are kept only where it colours (a terminal). A session without
        # dryrun tests is left as pytest writes it.
        if not _engaged(config, state):
            write(msg, flush=flush, **markup)
            return
        text = _redactor(state)(msg)
        shown = escape_terminal(text) if writer.hasmarkup else escape_controls(text)
        write(shown, flush=flush, **markup)

    writer.write = redacting_write
    writer._cron_dryrun_redacts = True


# -- end of session: verdict, evidence, exit status -----------------------------------------------


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(STATE_KEY, None)
    if state is None or not state.active:
        return
    if session.config.option.collectonly:
        state.active = False  # --collect-only: nothing ran, nothing is written
        return
    _defer_sigterm(session.config, state)
    # a signal ends the run as interrupted even where a library swallowed it
    state.interrupted = (
        session.exitstatus == pytest.ExitCode.INTERRUPTED or state.signalled is not None
    )
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
                "interrupted: the run was stopped (SIGTERM or Ctrl-C) before every check had run; "
                "it is recorded as interrupted and never counts toward promotion"
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
            [(s.step, s.status) for s in state.verdict.steps],
            remote=state.settings.is_remote,
        )
        if found is not None:  # it quotes what the target sent: shown escaped everywhere
            found = dataclasses.replace(
                found, cause=escape_controls(found.cause), fix=escape_controls(found.fix)
            )
        state.root_cause = found
    _redact_html_environment(session.config, state)
    if state.config_error:
        # A failed preflight: nothing was triggered, so nothing is recorded (no ledger line,
        # smoke log, summary or notes). gate.json (the latest verdict, NO-GO with the cause,
        # so a CI job never reads a stale GO) and the HTML report say why, and only into an
        # audit folder the preflight found writable.
        if state.preflight is None or state.preflight.problems_in("audit folder"):
            state.html_temp_path = None
            state.artefacts.pop("report", None)
        else:
            _write_run_evidence(state)
        return
    _write_run_evidence(state)
    if state.interrupted:
        session.exitstatus = pytest.ExitCode.INTERRUPTED
    elif not state.verdict.go and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _write_run_evidence(state: DryRunState) -> None:
    from cron_dryrun.session import finish, reporting

    finish.write_all(state, reporting.gate_document)
    finish.append_github_step_summary(state)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    previous = config.stash.get(SIGTERM_KEY, None)
    if previous is not None and threading.current_thread() is threading.main_thread():
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # Normally done in the terminal summary; this covers runs without a terminal reporter.
    state = config.stash.get(STATE_KEY, None)
    if state is None or not state.active or state.verdict is None:
        return
    _finish_html(config, state)


def _finish_html(config: pytest.Config, state: DryRunState) -> None:
    """Copy pytest-html's finished report into audit/ (redacted) and point its message there."""
    if state.html_finished:
        return
    state.html_finished = True
    temp = state.html_temp_path
    from cron_dryrun.session import finish

    finish.finish_html(state)
    final = state.artefacts.get("report")
    if not temp or final is None:
        return
    for plugin in config.pluginmanager.get_plugins():
        # pytest-html prints "Generated html report: <path>"; the temp file is gone by then
        if str(getattr(plugin, "_report_path", "")) == str(temp):
            plugin._report_path = Path(final).resolve()


@pytest.hookimpl(tryfirst=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    if state is None or not state.active or state.verdict is None:
        return
    from cron_dryrun.session import finish, reporting

    _finish_html(config, state)
    reporting.print_terminal_summary(terminalreporter, state, finish.github_annotations(state))


# -- pytest-html ----------------------------------------------------------------------------------


def _redact_html_environment(config: pytest.Config, state: DryRunState) -> None:
    """pytest-metadata's environment table goes into the report: redact its values."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return
    metadata = config.stash.get(metadata_key, None)
    if not metadata:
        return
    redact = _redactor(state)

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    for key in list(metadata):
        metadata[key] = clean(metadata[key])
    from cron_dryrun.session.reporting import describe_target

    metadata["cron-dryrun target"] = redact(describe_target(state))


class _HtmlHooks:
    """Registered only when pytest-html is installed: its hooks are unknown otherwise."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_html_report_title(self, report: Any) -> None:
        state = self.config.stash[STATE_KEY]
        if not _engaged(self.config, state):  # asked at session start, before collection
            return
        report.title = _redactor(state)(f"cron-dryrun gate: {state.settings.target_name}")

    def pytest_html_results_summary(
        self, prefix: list[str], summary: list[str], postfix: list[str]
    ) -> None:
        from cron_dryrun.session import reporting

        state = self.config.stash[STATE_KEY]
        # the operator's own --html: no banner at the top
        if _engaged(self.config, state) and state.html_temp_path is None:
            # pytest-html writes the operator's file itself, past the evidence writer: the
            # verdict block (reasons, root cause) is redacted here
            redact = _redactor(state)
            prefix.extend(redact(block) for block in reporting.html_verdict_block(state))
