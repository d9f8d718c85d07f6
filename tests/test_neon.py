"""Neon as staging has it: TLS for remote databases, a compute that wakes late, a pooler.

The cold start is a real late start: nothing listens on the port until the waiting
client has said it is waiting; then a real PgBouncer starts there, in front of the
embedded PostgreSQL. The pooled path runs through PgBouncer in transaction mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from neon_compute import sleeping_compute
from pgbouncer import start_pgbouncer
from suite_runs import clean_env, guarded_env, netguard_attempts

from cron_dryrun.config.db_url import InsecureDatabaseUrl, secure_database_url, secure_dsn
from cron_dryrun.target import database as db
from cron_dryrun.target.db_wake import DatabaseWakeError, failure_of, wake_database
from cron_dryrun.target.pg_server import RunningPostgres

# -- sslmode --------------------------------------------------------------------------------------

NEON = "postgresql://app:pw@ep-cool-name-123456.eu-central-1.aws.neon.tech/neondb"


def test_a_remote_url_without_sslmode_gets_require() -> None:
    assert secure_database_url(NEON) == NEON + "?sslmode=require"
    assert (
        secure_database_url(NEON + "?application_name=x")
        == NEON + "?application_name=x&sslmode=require"
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/app",
        "postgresql://postgres@localhost/app",
        "postgresql://postgres@[::1]:5432/app",
        "postgresql://postgres:@/postgres?host=/tmp/socketdir",
    ],
)
def test_a_loopback_url_is_left_alone(url: str) -> None:
    assert secure_database_url(url) == url
    assert secure_database_url(url + ("&" if "?" in url else "?") + "sslmode=disable")


def test_sslmode_disable_to_a_remote_host_is_refused_unless_allowed() -> None:
    insecure = NEON + "?sslmode=disable"
    with pytest.raises(InsecureDatabaseUrl) as excinfo:
        secure_database_url(insecure)
    assert str(excinfo.value) == (
        "sslmode=disable sends the database password and every row in clear text to "
        "ep-cool-name-123456.eu-central-1.aws.neon.tech, which is not this machine: drop "
        "sslmode=disable (Neon requires TLS; sslmode=require is added when none is given), or "
        "pass --allow-insecure-db if this network is trusted"
    )
    assert secure_database_url(insecure, allow_insecure=True) == insecure
    assert secure_database_url(NEON + "?sslmode=verify-full") == NEON + "?sslmode=verify-full"


KEYWORD_NEON = "host=ep-cool-name-123456.eu-central-1.aws.neon.tech dbname=neondb user=app"


def test_a_keyword_dsn_gets_the_same_rule_as_a_url() -> None:
    assert secure_dsn(KEYWORD_NEON) == KEYWORD_NEON + " sslmode=require"
    assert secure_dsn("host=127.0.0.1 dbname=app") == "host=127.0.0.1 dbname=app"
    assert secure_dsn(NEON) == NEON + "?sslmode=require"  # the URL form, as before
    with pytest.raises(InsecureDatabaseUrl):
        secure_dsn(KEYWORD_NEON + " sslmode=disable")
    assert secure_dsn(KEYWORD_NEON + " sslmode=disable", allow_insecure=True).endswith("disable")


def test_cron_dryrun_diff_refuses_a_keyword_dsn_with_sslmode_disable_to_a_remote_host(
    tmp_path: Path,
) -> None:
    """The rule lives under every caller: `diff` gets it too, before any connection."""
    export = tmp_path / "export.csv"
    export.write_text("start_time,end_time\n")
    log = tmp_path / "netguard.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "cron_dryrun.cli", "diff", "--export", str(export),
         "--database-url", KEYWORD_NEON + " password=Kw-Neon-Pw-71 sslmode=disable",
         "--from", "2025-10-06", "--to", "2025-10-07", "--output", str(tmp_path / "r.json")],
        env=guarded_env(clean_env(), log), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "cron-dryrun diff: DATABASE_URL: sslmode=disable sends the database password" in (
        result.stderr
    )
    assert "Kw-Neon-Pw-71" not in result.stdout + result.stderr
    assert netguard_attempts(log) == []


# -- cold start -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["starting", "slow"])
def test_a_compute_that_wakes_late_is_waited_for(pg_server: RunningPostgres, mode: str) -> None:
    """Neon's proxy accepts while the compute starts: it says so (57P03), or holds the
    connection unanswered; the client waits, and gets through once the compute is up."""
    said: list[str] = []
    waiting = threading.Event()
    result: list[object] = []

    def say(message: str) -> None:
        said.append(message)
        waiting.set()

    with sleeping_compute(mode) as compute:

        def wake() -> None:
            try:
                result.append(wake_database(compute.dsn(), timeout_s=60, say=say))
            except Exception as exc:
                result.append(exc)

        thread = threading.Thread(target=wake)
        thread.start()
        try:
            assert waiting.wait(30), "the client never said it was waiting"
            # the compute wakes: a real pooler answers behind the proxy
            with start_pgbouncer(pg_server.dsn) as pooler:
                compute.wake(pooler.port)
                thread.join(60)
        finally:
            thread.join(60)
    assert len(result) == 1 and isinstance(result[0], int) and result[0] > 1, result
    first_error = {
        "starting": 'OperationalError: connection failed: connection to server at "127.0.0.1", '
        f"port {compute.port} failed: FATAL:  the database system is starting up",
        "slow": "ConnectionTimeout: connection timeout expired",
    }[mode]
    assert said[0] == (
        "waiting for the database to wake ... (up to 60s, --db-connect-timeout; first attempt: "
        f"{first_error})"
    )
    assert said[-1] == f"the database answered after {result[0]} attempts"


def test_giving_up_names_the_last_error_and_the_option() -> None:
    with sleeping_compute() as compute, pytest.raises(DatabaseWakeError) as excinfo:
        wake_database(compute.dsn(), timeout_s=1)
    message = str(excinfo.value)
    assert message.startswith("the database did not answer within 1s (")
    assert (
        "raise --db-connect-timeout / DB_CONNECT_TIMEOUT if it is waking slowly): last error: "
        in message
    )
    assert "the database system is starting up" in message


# -- what is not a waking compute is named within seconds -----------------------------------------


def _named_quickly(dsn: str) -> tuple[str, list[str], float]:
    said: list[str] = []
    started = time.monotonic()
    with pytest.raises(DatabaseWakeError) as excinfo:
        wake_database(dsn, timeout_s=60, say=said.append)
    return str(excinfo.value), said, time.monotonic() - started


def test_a_refused_connection_is_named_within_seconds_not_waited_for() -> None:
    message, said, took = _named_quickly("postgresql://app:pw@127.0.0.1:1/app")
    assert message.startswith(
        "nothing listens at 127.0.0.1:1: check the host and port in DATABASE_URL (a sleeping "
        "Neon compute still accepts the connection; it is not waited for) (3 attempts; "
        "last error: OperationalError: "
    )
    assert "Connection refused" in message
    assert said == [] and took < 10


def test_a_host_that_does_not_resolve_is_named_within_seconds() -> None:
    message, said, took = _named_quickly("postgresql://app:pw@no-such-host.invalid/app")
    assert message.startswith(
        "host no-such-host.invalid does not resolve: check the host name in DATABASE_URL "
        "(a Neon host resolves even while its compute sleeps) ("
    )
    assert said == [] and took < 10


def test_a_pooler_in_statement_mode_is_named_at_once_with_the_fix(
    pg_server: RunningPostgres,
) -> None:
    with start_pgbouncer(pg_server.dsn, pool_mode="statement") as pooler:
        message, said, took = _named_quickly(pooler.dsn_for(pg_server.dsn))
    assert message == (
        "the database refused the connection: ProtocolViolation: transaction blocks not allowed "
        "in statement pooling mode [SQLSTATE 08P01] (not retried: the pooler runs in statement "
        "mode, which "
        "refuses the transactions the checks read in: use the direct endpoint or a pooler in "
        "transaction mode (Neon's -pooler host is))"
    )
    assert said == [] and took < 10


def test_an_unknown_database_is_named_at_once(pg_server: RunningPostgres) -> None:
    with start_pgbouncer(pg_server.dsn) as pooler:
        dsn = pooler.dsn_for(db.with_database(pg_server.dsn, "no_such_db"))
        message, said, _took = _named_quickly(dsn)
    assert message.startswith("the database refused the connection: OperationalError: ")
    assert message.endswith(
        "(not retried: check the database name in DATABASE_URL (the path after the host))"
    )
    assert said == []


@pytest.mark.parametrize(
    ("message", "sqlstate", "kind"),
    [
        ("connection timeout expired", None, "waking"),
        ('connection to server at "h", port 5432 failed: FATAL: the database system is '
         "starting up", None, "waking"),
        ("ERROR: Couldn't connect to compute node", None, "waking"),
        ("server closed the connection unexpectedly", None, "waking"),
        ("anything", "57P03", "waking"),
        ('connection to server at "10.0.0.9", port 6543 failed: No route to host', None,
         "unreachable"),
        ('connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or '
         "directory", None, "unreachable"),
        ("could not translate host name \"db.example\" to address", None, "unreachable"),
        ('FATAL: password authentication failed for user "app"', None, "refused"),
        ('FATAL: role "app" does not exist', None, "refused"),
        ("ERROR: Your account or project has exceeded the compute time quota.", None, "refused"),
        ("permission denied for database app", "42501", "refused"),
        ("FATAL: something new", None, "refused"),
    ],
)  # fmt: skip
def test_which_failures_wait(message: str, sqlstate: str | None, kind: str) -> None:
    assert failure_of(message, sqlstate).kind == kind


def test_an_unreachable_failure_names_where() -> None:
    assert failure_of(
        'connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or directory'
    ).why.startswith("nothing listens at the socket /tmp/.s.PGSQL.5432: ")
    assert failure_of(
        'connection to server at "::1", port 5433 failed: Connection refused'
    ).why.startswith("nothing listens at [::1]:5433: ")


def test_a_wrong_password_is_not_waited_for(pg_server: RunningPostgres) -> None:
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS wake_probe")
        conn.execute("CREATE ROLE wake_probe LOGIN PASSWORD 'right'")
    # the embedded server trusts local users; a role without LOGIN is refused for good instead
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute("ALTER ROLE wake_probe NOLOGIN")
    dsn = db.with_database(pg_server.dsn, "postgres").replace("postgres:@", "wake_probe:wrong@", 1)
    with pytest.raises(DatabaseWakeError) as excinfo:
        wake_database(dsn, timeout_s=30)
    assert str(excinfo.value).startswith("the database refused the connection: OperationalError: ")
    assert str(excinfo.value).endswith(
        "(not retried: the role may not log in: use a role with LOGIN)"
    )


# -- pooled endpoints: PgBouncer in transaction mode ----------------------------------------------

POOLED_ROLE = "pooled_reader"  # listed in the pooler's auth file (tests/pgbouncer.py)


def _reader_refused_snapshots(app_dsn: str) -> str:
    """A non-superuser reader of ``app_dsn`` that may not export snapshots; its DSN."""
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (POOLED_ROLE,)
        ).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {POOLED_ROLE} LOGIN")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {POOLED_ROLE}")
        conn.execute("REVOKE EXECUTE ON FUNCTION pg_export_snapshot() FROM PUBLIC")
    return app_dsn.replace("postgres:@", f"{POOLED_ROLE}:@", 1)


def _csv(files: object) -> tuple[list[str], list[str]]:
    totals = sorted(line for p in files.totals for line in p.read_text().splitlines())  # type: ignore[attr-defined]
    stats = sorted(files.stats.read_text().splitlines())  # type: ignore[attr-defined]
    return totals, stats


def test_the_shared_snapshot_falls_back_to_one_connection_when_refused(
    pg_server: RunningPostgres, app_database: str, tmp_path: Path
) -> None:
    from cron_dryrun.parity import usage_totals
    from tests.test_diff_command import D6, D7, midnight, seed

    seed(
        app_database,
        [
            {"window_start": midnight(D6), "openai_user_id": "user_6", "tokens_in": 5},
            {"openai_user_id": "user_7"},
            {"project_id": None, "openai_api_key_id": None, "openai_user_id": None},
        ],
    )
    direct = usage_totals.copy_daily_totals_parallel(app_database, D6, D7, tmp_path / "a.csv")
    reader = _reader_refused_snapshots(app_database)
    with start_pgbouncer(pg_server.dsn) as pooler:
        pooled = pooler.dsn_for(reader)
        with db.read_only(pooled) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT pg_export_snapshot()")  # the refusal is real
        through = usage_totals.copy_daily_totals_parallel(pooled, D6, D7, tmp_path / "b.csv")
        shared = usage_totals.copy_daily_totals_parallel(
            pooler.dsn_for(app_database), D6, D7, tmp_path / "c.csv"
        )  # the superuser may export: the snapshot is shared across the pooler's connections
    assert _csv(through) == _csv(direct) == _csv(shared)
    assert len(_csv(direct)[0]) == 3


def test_app_connections_use_no_server_side_prepared_statements(app_database: str) -> None:
    with db.read_only(app_database) as conn:
        assert conn.prepare_threshold is None and conn.read_only is True


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://cron:p%40ss@ep-x.neon.tech/app",
        "postgresql://cron@ep-x.neon.tech/app?sslmode=require",
        "postgresql://cron@ep-x.neon.tech/app?connect_timeout=3&sslmode=require",
        "postgresql://cron@ep-x.neon.tech/app?",
        "postgresql://cron@h1:5432,h2:5433/app?target_session_attrs=read-write&",
        "postgres:///app?host=/tmp/sock",
        "host=ep-x.neon.tech dbname=app user=cron password='a b' sslmode=require",
        "host=ep-x.neon.tech connect_timeout=3 dbname=app",
        "",
    ],
)
def test_the_adbc_conninfo_is_what_libpq_reads_from_psycopgs(dsn: str) -> None:
    """The ADBC path builds its conninfo without importing psycopg; libpq must read it as
    it reads the psycopg path's (``read_only_conninfo``)."""
    from psycopg.conninfo import conninfo_to_dict

    from cron_dryrun.config.db_url import CONNECT_TIMEOUT_S, with_connect_timeout

    fast = with_connect_timeout(dsn, CONNECT_TIMEOUT_S)
    assert conninfo_to_dict(fast) == conninfo_to_dict(db.read_only_conninfo(dsn))
    assert conninfo_to_dict(fast)["connect_timeout"] == str(CONNECT_TIMEOUT_S)


def test_cron_dryrun_diff_waits_for_a_late_database_while_it_reads_the_export(
    pg_server: RunningPostgres, app_database: str, tmp_path: Path
) -> None:
    """The wake-up is no longer a step before the diff: it runs when ADBC's first connection
    fails, and once the database answers the diff still reads over ADBC."""
    from psycopg.conninfo import conninfo_to_dict
    from test_exports import bucket_row, write_export

    dbname = conninfo_to_dict(app_database)["dbname"]
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    report = tmp_path / "report.json"
    with sleeping_compute() as compute:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cron_dryrun.cli", "diff", "--export", str(export),
             "--database-url", compute.dsn(dbname=dbname),
             "--from", "2025-10-07", "--to", "2025-10-07", "--output", str(report),
             "--db-connect-timeout", "60", "--no-progress"],
            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # blocks until the child says it is waiting
            assert first.startswith("cron-dryrun diff: waiting for the database to wake ..."), first
            with start_pgbouncer(pg_server.dsn) as pooler:
                compute.wake(pooler.port)
                _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert proc.returncode == 1, err  # the export's key-day is not in the empty database
    assert "cron-dryrun diff: the database answered after " in err
    data = json.loads(report.read_text())
    assert (data["dbReader"], data["dbReaderFallback"]) == ("adbc", None)
    assert data["counts"]["missingInDb"] == 1


def test_cron_dryrun_diff_names_a_database_that_never_answers(tmp_path: Path) -> None:
    from test_exports import bucket_row, write_export

    export = write_export(tmp_path / "export.csv", [bucket_row()])
    with sleeping_compute() as compute:
        result = subprocess.run(
            [sys.executable, "-m", "cron_dryrun.cli", "diff", "--export", str(export),
             "--database-url", compute.dsn("cron", "app", "Diff-Pw-77"),
             "--from", "2025-10-07", "--to", "2025-10-07", "--output", str(tmp_path / "r.json"),
             "--db-connect-timeout", "1", "--no-progress"],
            env=clean_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0].startswith("cron-dryrun diff: waiting for the database to wake ... (up to 1s")
    assert lines[-1].startswith("cron-dryrun diff: postgresql://***@127.0.0.1:")
    assert "the database did not answer within 1s (" in lines[-1]
    assert "Diff-Pw-77" not in result.stdout + result.stderr
    assert not (tmp_path / "r.json").exists()
