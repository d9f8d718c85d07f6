"""Shared fixtures for the project's own tests: one PostgreSQL for the whole run."""

from __future__ import annotations

import http.server
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from loopback import served
from neon_compute import SleepingCompute, sleeping_compute
from suite_runs import RunSuite, SuiteRun, preload, run_in_process, shared_server_args

from cron_dryrun.target.database import create_app_database, database_name, drop_database
from cron_dryrun.target.embedded import start_embedded
from cron_dryrun.target.pg_server import RunningPostgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[RunningPostgres]:
    """One real PostgreSQL (embedded backend) shared by every test that needs a database."""
    running = start_embedded()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def app_database(pg_server: RunningPostgres) -> Iterator[str]:
    """A fresh database holding the app's tables (fixtures/schema.sql), empty; its DSN."""
    dsn = create_app_database(pg_server.dsn)
    try:
        yield dsn
    finally:
        drop_database(pg_server.dsn, database_name(dsn))


@pytest.fixture(scope="session", autouse=True)
def _child_bytecode_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Child Pythons (suite runs, commands) cache their bytecode, pytest's assertion rewrites
    included, in one folder for the session. With PYTHONDONTWRITEBYTECODE set (as on this
    machine and its CI) each child compiled the same ~170 modules again: 0.8 s a child."""
    mp = pytest.MonkeyPatch()
    mp.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    mp.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.mktemp("pycache")))
    try:
        yield
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def _preloaded() -> None:
    preload()


@pytest.fixture
def pytester(pytester: pytest.Pytester, _preloaded: None) -> pytest.Pytester:
    """pytester, with what its in-process runs would import again each time imported once."""
    return pytester


@pytest.fixture
def run_suite(pytester: pytest.Pytester, request: pytest.FixtureRequest) -> RunSuite:
    """Run the acceptance suite in this process (pytester) and parse what it left: the
    returncode, stdout, stderr, gate.json and ledger of the ``--audit-dir=`` it was given.
    ``env`` is added to the operator-free environment a child gets from ``clean_env``.

    ``shared_postgres=True``: the local stack's database is made on the session's one
    PostgreSQL (``--db-backend url``, a fresh database per run, as the fault matrix does)
    instead of an embedded server started for the run (3 s each): for tests of the gate and
    the evidence, where the backend is not what is tested."""

    def run(*args: str, shared_postgres: bool = False, **kwargs: Any) -> SuiteRun:
        if shared_postgres:
            server: RunningPostgres = request.getfixturevalue("pg_server")
            args = (*shared_server_args(server), *args)
        return run_in_process(pytester, *args, **kwargs)

    return run


@pytest.fixture
def sleeping_neon() -> Iterator[SleepingCompute]:
    """A Neon compute that stays asleep: its proxy accepts and says it is starting, so a client
    waits up to its --db-connect-timeout (tests/neon_compute.py)."""
    with sleeping_compute() as compute:
        yield compute


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def counting_cron() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that only counts what reaches it (nothing may, before the
    preflight passes): its URL and the paths that reached it."""
    hits: list[str] = []
    handler = type("Handler", (_Counting,), {"hits": hits})
    with served(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage", hits
