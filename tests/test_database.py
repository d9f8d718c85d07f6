"""Database providers: both embedded paths, as root and as an ordinary user, and the errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from cron_dryrun.target import database as db
from cron_dryrun.target import embedded, pg_server, providers

ORDINARY_USER_SCRIPT = textwrap.dedent(
    """
    import os, psycopg
    from cron_dryrun.target.database import create_app_database
    from cron_dryrun.target.embedded import start_embedded
    running = start_embedded(prefer={prefer!r})
    try:
        dsn = create_app_database(running.dsn)
        with psycopg.connect(dsn) as conn:
            n = conn.execute("select count(*) from usage_events").fetchone()[0]
        print("OK", os.geteuid(), running.backend, n)
    finally:
        running.stop()
    """
)


def requires_system_binaries() -> Path:
    bindir = embedded.find_postgres_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries on this machine (apt-get install postgresql)")
    return bindir


def requires_pgserver() -> None:
    if not embedded.pgserver_available():
        pytest.skip("the pgserver wheel is not installed (it ships for CPython 3.9-3.12)")


@pytest.mark.parametrize("prefer", ["pgserver", "system"])
def test_embedded_as_the_current_user(prefer: str) -> None:
    if prefer == "pgserver":
        requires_pgserver()
    else:
        requires_system_binaries()
    running = embedded.start_embedded(prefer=prefer)
    try:
        dsn = db.create_app_database(running.dsn)
        with psycopg.connect(dsn) as conn:
            indexes = {
                r[0]
                for r in conn.execute(
                    "select indexname from pg_indexes where tablename = 'usage_events'"
                )
            }
        assert "usage_admin_bucket_idx" in indexes
        assert running.backend.startswith("embedded")
    finally:
        running.stop()


@pytest.mark.parametrize("prefer", ["pgserver", "system"])
def test_embedded_as_an_ordinary_user(prefer: str, tmp_path: Path) -> None:
    """As root, run the provider as `nobody`; as anyone else, run it as that user."""
    if prefer == "pgserver":
        requires_pgserver()
    else:
        requires_system_binaries()
    script = ORDINARY_USER_SCRIPT.format(prefer=prefer)
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        os.chmod(tmp_path, 0o777)
        command = ["runuser", "-u", embedded.UNPRIVILEGED_USER, "--", *command]
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = result.stdout.strip().splitlines()[-1]
    ok, uid, *_rest = line.split(" ")
    assert ok == "OK" and int(uid) != 0
    assert line.endswith(" 0")


def test_no_postgres_anywhere_names_three_ways_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "pgserver_available", lambda: False)
    monkeypatch.setattr(embedded, "find_postgres_bindir", lambda: None)
    with pytest.raises(pg_server.DatabaseUnavailable) as excinfo:
        embedded.start_embedded()
    message = str(excinfo.value)
    assert "DATABASE_URL=postgres://" in message
    assert "DB_BACKEND=testcontainers" in message
    assert "apt-get install postgresql" in message and "pip install pgserver" in message


@pytest.mark.parametrize(
    ("backend", "url", "docker", "expected"),
    [
        ("auto", "postgresql://h/db", True, "url"),
        ("auto", None, True, "testcontainers"),
        ("auto", None, False, "embedded"),
        ("embedded", "postgresql://h/db", True, "embedded"),
    ],
)
def test_auto_backend(backend: str, url: str | None, docker: bool, expected: str) -> None:
    assert providers.choose_backend(backend, url, lambda: docker) == expected


def test_read_only_connection_refuses_writes(app_database: str) -> None:
    with db.read_only(app_database) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        conn.execute("insert into users (id) values ('u')")


def test_rows_written_since_the_watermark(app_database: str) -> None:
    with psycopg.connect(app_database) as conn:
        conn.execute("insert into users (id) values ('u1')")
        conn.execute(
            "insert into provider_keys (user_id, provider, encrypted_key, iv, auth_tag) values ('u1', 'openai', 'k', 'i', 't')"
        )
        conn.execute(
            "insert into usage_events (key_id, model, timestamp, window_start, window_end) values (1, 'old', now(), '2025-10-01', '2025-10-02')"
        )
    with db.read_only(app_database) as ro:
        mark = db.xid_watermark(ro)
    with psycopg.connect(app_database) as conn:
        conn.execute(
            "insert into usage_events (key_id, model, timestamp, window_start, window_end) values (1, 'new', now(), '2025-10-07', '2025-10-08')"
        )
    with db.read_only(app_database) as ro:
        written = db.rows_written_since(ro, mark)
        assert [r[2] for r in written] == ["new"]
        assert db.usage_row_count(ro) == 2
        assert db.active_openai_keys(ro) == 1
        assert db.duplicate_bucket_keys(ro) == 0
        assert set(db.usage_events_columns(ro)) >= {"window_start", "window_end"}


def test_the_watch_splits_what_a_trigger_wrote_into_inserted_and_updated(
    app_database: str,
) -> None:
    """Writes, counted (issue 27): a same-values rewrite and an insert, told apart read-only."""
    from cron_dryrun.exchange.record import UsageRow
    from cron_dryrun.rules.telemetry import WrittenRows

    insert = (
        "insert into usage_events (key_id, model, timestamp, window_start, window_end) "
        "values (1, %s, now(), '2025-10-07', '2025-10-08')"
    )
    with psycopg.connect(app_database) as conn:
        conn.execute("insert into users (id) values ('u1')")
        conn.execute(
            "insert into provider_keys (user_id, provider, encrypted_key, iv, auth_tag, "
            "usage_mode) values ('u1', 'openai', 'k', 'i', 't', 'admin')"
        )
        for model in ("kept", "rewritten"):
            conn.execute(insert, (model,))
    watch = db.UsageWatch(app_database)
    with psycopg.connect(app_database) as conn:
        conn.execute("update usage_events set tokens_in = tokens_in where model = 'rewritten'")
        conn.execute(insert, ("new",))
    rows, count_after = watch.written()
    written = WrittenRows.split((UsageRow(*r) for r in rows), watch.max_id_before)
    assert (watch.rows_before, count_after, watch.max_id_before) == (2, 3, 2)
    assert [r.model for r in written.inserted] == ["new"]
    assert [r.model for r in written.updated] == ["rewritten"]
    with db.read_only(app_database) as ro:
        assert db.openai_keys(ro) == [(1, "admin")]


def test_a_driver_error_is_one_line_without_its_password() -> None:
    error = ValueError("invalid dsn: host=db password='s3cret pw' user=app\nDETAIL: more")
    assert db.describe_db_error(error) == "ValueError: invalid dsn: host=db password=*** user=app"
    assert db.describe_db_error(ValueError("")) == "ValueError"
