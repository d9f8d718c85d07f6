"""The target a run talks to, provided for the session and taken down after it.

Staging when CRON_URL is set (its database woken first: a suspended Neon compute wakes on the
first connection). Else the local stack: a PostgreSQL server on the chosen backend (``auto``
falls back from Docker to the embedded server when the image cannot start), a fresh app
database on it, and the stand-in cron and OpenAI API on loopback; all of it is stopped and
dropped when the context ends.

The backends, the database driver and the stand-ins are imported when a run needs them: a
session that provides no target (another project's) never loads them.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cron_dryrun.config.settings import DEFAULT_OPENAI_BASE_URL, Settings
from cron_dryrun.rules.gate import first_line
from cron_dryrun.session.state import DryRunState, Target


@contextmanager
def provide_target(
    settings: Settings, state: DryRunState, say: Callable[[str], None]
) -> Iterator[Target]:
    """The run's target, recorded on ``state``; ``say`` writes a line to the terminal now."""
    if settings.is_remote:
        yield staging_target(settings, state, say)
        return
    with local_target(settings, state) as target:
        yield target


def staging_target(settings: Settings, state: DryRunState, say: Callable[[str], None]) -> Target:
    """The staging deployment named by the settings (checked complete at collection)."""
    assert settings.cron_url and settings.cron_secret and settings.database_url
    target = Target(
        cron_url=settings.cron_url,
        secret=settings.cron_secret,
        database_dsn=settings.database_url,
        exports=settings.openai_export,
        is_local=False,
        backend="url",
        openai_url=settings.openai_base_url or DEFAULT_OPENAI_BASE_URL,
        admin_keys=settings.openai_admin_keys,
    )
    from cron_dryrun.target.db_wake import DatabaseWakeError, wake_database

    try:  # a suspended Neon compute wakes on the first connection
        wake_database(settings.database_url, settings.db_connect_timeout, say=say)
    except DatabaseWakeError as exc:
        target.db_wake_error = str(exc)
    state.target = target
    return target


@contextmanager
def local_target(settings: Settings, state: DryRunState) -> Iterator[Target]:
    """Real PostgreSQL on the chosen backend and the stand-ins on loopback."""
    from cron_dryrun.standin import start_local_stack
    from cron_dryrun.target import database

    with ExitStack() as stack:
        server_dsn, backend_name = _database_server(settings, state, stack)
        app_dsn = database.create_app_database(server_dsn)
        stack.callback(database.drop_database, server_dsn, database.database_name(app_dsn))
        secret = settings.cron_secret or secrets.token_urlsafe(24)
        state.secrets.add(secret)
        export_dir = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="cron-dryrun-export-"))
        )
        local = stack.enter_context(
            start_local_stack(
                app_dsn,
                secret=secret,
                fault=settings.fault,
                export_dir=export_dir,
                slow_delay_s=settings.cron_timeout + 2.0,
                compress=settings.standin_compress,
                bypass_secret=standin_bypass(settings, state),
            )
        )
        state.secrets.add(local.admin_key)
        target = Target(
            cron_url=local.cron_url,
            secret=local.secret,
            database_dsn=app_dsn,
            exports=settings.openai_export or tuple(local.export_paths),
            is_local=True,
            backend=backend_name,
            openai_url=local.openai_url,
            admin_keys=(local.admin_key,),
        )
        state.target = target
        yield target


def _database_server(settings: Settings, state: DryRunState, stack: ExitStack) -> tuple[str, str]:
    """The PostgreSQL server's DSN and its backend's name; a server started here is stopped
    when ``stack`` closes."""
    from cron_dryrun.target import providers
    from cron_dryrun.target.pg_server import DatabaseUnavailable

    backend = providers.choose_backend(
        settings.db_backend, settings.database_url, providers.docker_engine_answers
    )
    if backend == "url":
        assert settings.database_url
        return settings.database_url, "url"
    try:
        server = stack.enter_context(providers.provide_server(backend, settings.postgres_image))
    except DatabaseUnavailable as exc:
        if settings.db_backend != "auto" or backend != "testcontainers":
            raise
        # auto picked Docker because an engine answered, but it could not start the
        # image (e.g. no registry): the embedded backend needs neither.
        state.terminal_notes.append(
            f"auto backend: testcontainers failed ({first_line(str(exc))}); used embedded instead"
        )
        server = stack.enter_context(providers.provide_server("embedded", settings.postgres_image))
    return server.dsn, server.backend


def standin_bypass(settings: Settings, state: DryRunState) -> str | None:
    """With --standin-protection, the secret the stand-in's edge lets through: the operator's
    VERCEL_AUTOMATION_BYPASS_SECRET, or one nobody was told (the run is then blocked)."""
    if not settings.standin_protection:
        return None
    secret = settings.vercel_bypass_secret or secrets.token_urlsafe(24)
    state.secrets.add(secret)
    return secret
