"""Shared fixtures for the project's own tests: one PostgreSQL for the whole run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from neon_compute import SleepingCompute, sleeping_compute

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


@pytest.fixture
def sleeping_neon() -> Iterator[SleepingCompute]:
    """A Neon compute that stays asleep: its proxy accepts and says it is starting, so a client
    waits up to its --db-connect-timeout (tests/neon_compute.py)."""
    with sleeping_compute() as compute:
        yield compute
