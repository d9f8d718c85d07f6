"""The pytest plugin: options, the session object's lifetime, fixtures.

Hooks and fixtures only. ``pytest_configure`` resolves the settings and registers a
``DryRunSession`` (``session.dryrun_session``), whose methods are the session's hooks (the
gate, the verdict, the evidence, redaction of what pytest writes), and, when pytest-html is
active, its ``HtmlReport`` (``session.html_hooks``); ``pytest_unconfigure`` unregisters
them. The target is provided by ``session.provision``; the judging rules live in ``rules``
and ``parity``, every file in ``evidence``. Nothing imports this module (an import-linter
contract): the acceptance modules use ``cron_dryrun.testing``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from cron_dryrun.config.option_help import help_text as option_help
from cron_dryrun.config.option_help import metavar
from cron_dryrun.config.settings import OPTIONS, Settings, SettingsError, resolve_settings
from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.redaction import redact_dsn
from cron_dryrun.rules.markers import marker_lines
from cron_dryrun.session.dryrun_session import DryRunSession
from cron_dryrun.session.invocation import (
    ca_bundle_problem,
    path_value_read_as_test_path,
    wants_dryrun,
    xdist_problem,
)
from cron_dryrun.session.provision import provide_target
from cron_dryrun.session.pytest_outputs import RunRedaction, redact_debug_trace
from cron_dryrun.session.state import DryRunState, Target
from cron_dryrun.testing import Evidence

if TYPE_CHECKING:
    from cron_dryrun.session.preflight import Preflight
    from cron_dryrun.target.client import CronClient

# httpx, psycopg, the stand-ins and the evidence writer are imported by the modules that use
# them, when a dry run needs them: this module is loaded by every pytest run in an
# environment that has cron-dryrun installed.

SESSION_KEY = pytest.StashKey[DryRunSession]()

__all__ = ["path_value_read_as_test_path"]  # tests/test_plugin.py reads it from here


class RedactedDsn(str):
    """A DSN that shows no userinfo when pytest prints a fixture's value in a traceback."""

    def __repr__(self) -> str:
        return repr(redact_dsn(str(self)))


# -- options --------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cron-dryrun", "daily usage cron dry run (env variables in brackets)")
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


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for line in marker_lines():  # the plugin's markers: --strict-markers in any project
        config.addinivalue_line("markers", line)
    run_redaction = RunRedaction(
        os.environ,
        lambda: {
            n: config.getoption(f"cron_dryrun_{n}", None) for n in ("database_url", "cron_url")
        },
    )
    redact_debug_trace(config.trace.root, run_redaction)  # --debug, from its start
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
    settings_error = None
    try:
        settings = resolve_settings(cli=cli, env=os.environ, ini=_ini_values(config))
    except SettingsError as exc:
        if wants_dryrun(config) or any(v not in (None, False, []) for v in cli.values()):
            raise pytest.UsageError(f"cron-dryrun: {exc}") from None
        # another project's session (its own DATABASE_URL, say) is not stopped by our settings
        settings_error = f"cron-dryrun: {exc}"
        settings = Settings()
    problem = ca_bundle_problem(settings) or xdist_problem(config)
    if problem:
        raise pytest.UsageError(problem)
    session = DryRunSession(
        config,
        DryRunState(settings=settings),
        wants_dryrun=wants_dryrun(config),
        run_redaction=run_redaction,
        settings_error=settings_error,
    )
    config.stash[SESSION_KEY] = session
    session.register()


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()
        del config.stash[SESSION_KEY]


# -- fixtures -------------------------------------------------------------------------------------


def _session(config: pytest.Config) -> DryRunSession:
    return config.stash[SESSION_KEY]


@pytest.fixture(scope="session")
def dryrun_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved, frozen settings of this run."""
    return _session(pytestconfig).state.settings


@pytest.fixture(scope="session")
def dryrun_state(pytestconfig: pytest.Config) -> DryRunState:
    return _session(pytestconfig).state


@pytest.fixture(scope="session")
def dryrun_target(pytestconfig: pytest.Config) -> Iterator[Target]:
    """Staging when CRON_URL is set; else the local stack (real PostgreSQL + stand-ins on loopback)."""
    session = _session(pytestconfig)
    with provide_target(session.state.settings, session.state, session.say) as target:
        yield target


@pytest.fixture(scope="session")
def dryrun_preflight(pytestconfig: pytest.Config, dryrun_target: Target) -> Preflight:
    """The preflight's findings: from collection in remote mode (where a failure stopped the
    run before anything was sent), else run now against the local stack."""
    return _session(pytestconfig).local_preflight(dryrun_target)


@pytest.fixture(scope="session")
def app_dsn(dryrun_target: Target) -> str:
    """DSN of the app's database. The suite only reads it (see ``database.read_only``)."""
    return RedactedDsn(dryrun_target.database_dsn)


@pytest.fixture(scope="session")
def openai_exports(pytestconfig: pytest.Config, dryrun_target: Target) -> tuple[Path, ...]:
    """The OpenAI usage export(s) the parity check reconciles against.

    With ``--openai-usage=api`` the usage API's pages for the run's days are fetched into
    ``telemetry-audit/usage-<run-id>/`` (one folder per organisation) and used as the export;
    the pages go into the run's manifest. A refused key or an exhausted retry fails the checks
    that need the export, with the API's reason.
    """
    session = _session(pytestconfig)
    if session.state.settings.openai_usage != "api":
        return dryrun_target.exports
    return session.fetch_usage(dryrun_target, datetime.now(UTC))


@pytest.fixture(scope="session")
def cron_client(pytestconfig: pytest.Config, dryrun_target: Target) -> CronClient:
    """The client that triggers the cron: every exchange recorded, and watched on the terminal."""
    return _session(pytestconfig).cron_client(dryrun_target)


@pytest.fixture(scope="session")
def cron_run(
    pytestconfig: pytest.Config, dryrun_target: Target, cron_client: CronClient
) -> RecordedRun:
    """The one shared trigger of the session, with what the database saw around it."""
    return _session(pytestconfig).trigger_main(cron_client, dryrun_target)


@pytest.fixture
def evidence(request: pytest.FixtureRequest, dryrun_state: DryRunState) -> Evidence:
    return Evidence(dryrun_state, request.node.nodeid)
