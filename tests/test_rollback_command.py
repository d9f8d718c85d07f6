"""Rollback on a real PostgreSQL: exactly the rows since --since, counted, confirmed, logged."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from neon_compute import SleepingCompute
from suite_runs import clean_env, guarded_env, netguard_attempts

from cron_dryrun.cli import main
from cron_dryrun.cli.rollback import RollbackRefused, rollback
from cron_dryrun.evidence import (
    ROLLBACK_LOG_RELPATH,
    EvidenceWriter,
    Redactor,
    run_secrets,
)
from cron_dryrun.evidence.ledger import LedgerEntry, append_entry
from cron_dryrun.target.embedded import free_port

NOW = datetime(2025, 10, 8, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
SINCE = datetime(2025, 10, 7, tzinfo=UTC)
TARGET = "https://staging.cogni-track.app/api/cron/daily-usage"
DAYS = [datetime(2025, 10, d) for d in (4, 5, 6, 7, 8)]  # naive UTC, as the columns hold


def seed(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO users (id) VALUES ('user_1')")
        key_id = conn.execute(
            "INSERT INTO provider_keys (user_id, provider, encrypted_key, iv, auth_tag, usage_mode) "
            "VALUES ('user_1', 'openai', 'enc', 'iv', 'tag', 'admin') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        for day in DAYS:
            for model in ("gpt-4o-mini", "gpt-4o"):
                conn.execute(
                    "INSERT INTO usage_events (key_id, model, tokens_in, tokens_out, timestamp, window_start, "
                    "window_end, project_id) VALUES (%s, %s, 100, 10, %s, %s, %s, 'proj_1')",
                    (key_id, model, day, day, day + DAY),
                )
        # a legacy row without a window: never in a window_start >= since range
        conn.execute(
            "INSERT INTO usage_events (key_id, model, timestamp) VALUES (%s, 'gpt-4o', %s)",
            (key_id, DAYS[-1]),
        )


def rows(dsn: str) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT id, model, window_start, tokens_in FROM usage_events ORDER BY id"
        ).fetchall()


@pytest.fixture
def seeded(app_database: str) -> Iterator[str]:
    seed(app_database)
    yield app_database


@pytest.fixture
def writer(tmp_path: Path, seeded: str) -> EvidenceWriter:
    return EvidenceWriter(tmp_path / "audit", Redactor(run_secrets(None, seeded)))


def yes(counted: int, statement: str, database: str) -> bool:
    return True


def test_deletes_exactly_the_rows_since_and_logs_it(seeded: str, writer: EvidenceWriter) -> None:
    before = rows(seeded)
    earlier = [r for r in before if r[2] is None or r[2] < SINCE.replace(tzinfo=None)]
    shown: list[tuple[int, str, str]] = []

    def confirm(counted: int, statement: str, database: str) -> bool:
        shown.append((counted, statement, database))
        return True

    result = rollback(
        seeded, SINCE, now=NOW, dry_run_start=SINCE - DAY, confirm=confirm, writer=writer
    )
    assert result.committed
    assert (result.counted, result.deleted) == (4, 4)
    assert (
        result.statement
        == "DELETE FROM usage_events WHERE window_start >= '2025-10-07 00:00:00'::timestamp"
    )
    assert shown == [(4, result.statement, result.database)]
    assert "@" in result.database and "postgres:" not in result.database
    assert result.message == "deleted 4 row(s) with window_start >= 2025-10-07T00:00:00Z; committed"
    assert (
        rows(seeded) == earlier
    )  # earlier rows (and the windowless one) untouched, values and all

    log = (writer.audit_dir / ROLLBACK_LOG_RELPATH).read_text()
    assert log.startswith("# Rollback log\n")
    for line in (
        "## 2025-10-08T12:00:00Z — usage_events rows since 2025-10-07T00:00:00Z",
        "- Time: 2025-10-08T12:00:00Z",
        "- Since: 2025-10-07T00:00:00Z",
        "- Dry-run start: 2025-10-06T00:00:00Z",
        f"- Database: {result.database}",
        f"- Statement: `{result.statement}`",
        "- Rows counted and shown: 4",
        "- Outcome: 4 row(s) deleted, committed",
        "- [ ] Cron schedule disabled in Vercel",
        "- [ ] ENABLE_DAILY_USAGE_WINDOWS reset to false in staging",
    ):
        assert line in log.splitlines()

    again = rollback(
        seeded,
        SINCE,
        now=NOW + timedelta(minutes=5),
        dry_run_start=SINCE - DAY,
        confirm=yes,
        writer=writer,
    )
    assert (again.counted, again.deleted, again.committed) == (0, 0, True)
    log2 = (writer.audit_dir / ROLLBACK_LOG_RELPATH).read_text()
    assert log2.startswith(log)  # appended, the earlier entry intact
    assert log2.count("- [ ] Cron schedule disabled in Vercel") == 2


def test_not_confirmed_deletes_nothing(seeded: str, writer: EvidenceWriter) -> None:
    before = rows(seeded)
    result = rollback(
        seeded, SINCE, now=NOW, dry_run_start=SINCE, confirm=lambda *a: False, writer=writer
    )
    assert (result.committed, result.counted, result.message) == (
        False,
        4,
        "not confirmed; nothing deleted",
    )
    assert rows(seeded) == before
    assert not (writer.audit_dir / ROLLBACK_LOG_RELPATH).exists()


def test_a_count_that_changed_before_the_delete_rolls_back(
    seeded: str, writer: EvidenceWriter
) -> None:
    def confirm_while_the_cron_writes(counted: int, statement: str, database: str) -> bool:
        with psycopg.connect(seeded) as conn:  # another session adds a row in the range meanwhile
            conn.execute(
                "INSERT INTO usage_events (key_id, model, timestamp, window_start, window_end) "
                "SELECT id, 'o1', %s, %s, %s FROM provider_keys LIMIT 1",
                (DAYS[-1], DAYS[-1], DAYS[-1] + DAY),
            )
        return True

    result = rollback(
        seeded,
        SINCE,
        now=NOW,
        dry_run_start=SINCE,
        confirm=confirm_while_the_cron_writes,
        writer=writer,
    )
    before_delete = rows(seeded)
    assert not result.committed
    assert result.deleted == 0
    assert result.message == (
        "the delete matched 5 row(s) but 4 were counted and shown; rolled back, nothing deleted "
        "(rows changed in between: is the cron still running? disable it, then run the rollback again)"
    )
    assert (
        len([r for r in before_delete if r[2] is not None and r[2] >= SINCE.replace(tzinfo=None)])
        == 5
    )
    log = (writer.audit_dir / ROLLBACK_LOG_RELPATH).read_text()
    assert "- Outcome: nothing deleted, transaction rolled back: the delete matched 5 row(s)" in log


def test_refuses_a_future_since(seeded: str, writer: EvidenceWriter) -> None:
    with pytest.raises(RollbackRefused) as info:
        rollback(seeded, NOW + DAY, now=NOW, dry_run_start=SINCE, confirm=yes, writer=writer)
    assert str(info.value) == (
        "refusing to roll back: --since 2025-10-09T12:00:00Z is in the future (now 2025-10-08T12:00:00Z); "
        "no dry-run row can start after now"
    )


def test_refuses_a_since_older_than_the_dry_run_start(seeded: str, writer: EvidenceWriter) -> None:
    before = rows(seeded)
    with pytest.raises(RollbackRefused) as info:
        rollback(seeded, SINCE - DAY, now=NOW, dry_run_start=SINCE, confirm=yes, writer=writer)
    assert str(info.value) == (
        "refusing to roll back: --since 2025-10-06T00:00:00Z is before the dry-run start "
        "2025-10-07T00:00:00Z; rows older than the dry run are not the dry run's to delete "
        "(pass --dry-run-start if the dry run began earlier)"
    )
    assert rows(seeded) == before


# -- the command ----------------------------------------------------------------------------------


def test_command_refuses_without_yes_and_without_a_terminal(
    seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    before = rows(seeded)
    code = main(
        [
            "rollback",
            "--since",
            "2025-10-07T00:00:00Z",
            "--database-url",
            seeded,
            "--audit-dir",
            str(tmp_path / "audit"),
            "--dry-run-start",
            "2025-10-06T00:00:00Z",
        ]
    )
    assert code == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[1:] == [
        "rows with window_start >= 2025-10-07T00:00:00Z: 4",
        "statement: DELETE FROM usage_events WHERE window_start >= '2025-10-07 00:00:00'::timestamp",
    ]
    assert err.splitlines() == [
        "cron-dryrun rollback: refusing to delete without confirmation: stdin is not a terminal; "
        "check the count and statement above, then rerun with --yes",
        "cron-dryrun rollback: not confirmed; nothing deleted",
    ]
    assert rows(seeded) == before


def test_command_with_yes_uses_database_url_env_and_the_ledger_start(
    seeded: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    audit = tmp_path / "audit"
    # the first run, at 2025-10-07T02:00Z, covered the windows of the 6th and the 7th: the dry
    # run starts at 2025-10-06T00:00Z, and a --since at that instant is accepted
    first = datetime(2025, 10, 7, 2, tzinfo=UTC)
    append_entry(
        EvidenceWriter(audit, Redactor([])),
        LedgerEntry(
            first,
            TARGET,
            "GO",
            windows=(
                ("2025-10-06T00:00:00Z", "2025-10-07T00:00:00Z"),
                ("2025-10-07T00:00:00Z", "2025-10-08T00:00:00Z"),
            ),
        ),
    )
    append_entry(EvidenceWriter(audit, Redactor([])), LedgerEntry(first, "local stack", "GO"))
    monkeypatch.setenv("DATABASE_URL", seeded)
    monkeypatch.delenv("DRY_RUN_START", raising=False)
    monkeypatch.delenv("CRON_URL", raising=False)
    assert (
        main(["rollback", "--since", "2025-10-05T23:59:59Z", "--yes", "--audit-dir", str(audit)])
        == 2
    )
    assert capsys.readouterr().err.startswith(
        "cron-dryrun rollback: refusing to roll back: --since 2025-10-05T23:59:59Z is before the "
        "dry-run start 2025-10-06T00:00:00Z"
    )
    assert (
        main(["rollback", "--since", "2025-10-06T00:00:00Z", "--yes", "--audit-dir", str(audit)])
        == 0
    )
    out = capsys.readouterr().out
    assert "deleted 6 row(s) with window_start >= 2025-10-06T00:00:00Z; committed" in out
    assert "  - [ ] ENABLE_DAILY_USAGE_WINDOWS reset to false in staging" in out
    log = (audit / ROLLBACK_LOG_RELPATH).read_text()
    assert "- Rows counted and shown: 6" in log and "- Dry-run start: 2025-10-06T00:00:00Z" in log
    assert len([r for r in rows(seeded) if r[2] is not None]) == 4


@pytest.mark.parametrize(
    "ledger", ["none", "local stack only", "another target"], ids=lambda x: x.replace(" ", "-")
)
def test_command_refuses_without_a_known_dry_run_start(
    seeded: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    ledger: str,
) -> None:
    """A wrong folder or a fresh checkout must not let `--since 1970-...` delete old rows."""
    audit = tmp_path / "audit"
    writer = EvidenceWriter(audit, Redactor([]))
    if ledger == "local stack only":
        append_entry(writer, LedgerEntry(NOW - DAY, "local stack", "GO"))
    elif ledger == "another target":
        append_entry(writer, LedgerEntry(NOW - DAY, "https://preview.example.app/api/cron", "GO"))
        monkeypatch.setenv("CRON_URL", TARGET)
    before = rows(seeded)
    monkeypatch.setenv("DATABASE_URL", seeded)
    monkeypatch.delenv("DRY_RUN_START", raising=False)
    code = main(["rollback", "--since", "1970-01-01T00:00:00Z", "--yes", "--audit-dir", str(audit)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "cron-dryrun rollback: refusing to roll back: the dry-run start is unknown: "
    )
    assert "no --dry-run-start / DRY_RUN_START was given" in err
    assert rows(seeded) == before
    with pytest.raises(RollbackRefused, match="the dry-run start is unknown"):
        rollback(seeded, SINCE, now=NOW, dry_run_start=None, confirm=yes, writer=writer)
    assert rows(seeded) == before


def test_command_without_a_database(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert main(["rollback", "--since", "2025-10-07T00:00:00Z", "--yes"]) == 2
    assert capsys.readouterr().err == (
        "cron-dryrun rollback: no database: pass --database-url or set DATABASE_URL\n"
    )


def test_command_waits_for_a_database_that_does_not_answer_then_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], sleeping_neon: SleepingCompute
) -> None:
    """A suspended Neon compute: retried up to --db-connect-timeout, then named, nothing sent."""
    dsn = sleeping_neon.dsn("suite", "app", "Rollback-Pw-5ecret")
    code = main(
        [
            "rollback",
            "--since",
            "2025-10-07T00:00:00Z",
            "--database-url",
            dsn,
            "--audit-dir",
            str(tmp_path / "audit"),
            "--dry-run-start",
            "2025-10-06T00:00:00Z",
            "--db-connect-timeout",
            "1",
            "--yes",
        ]
    )
    assert code == 1
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0].startswith(
        "cron-dryrun rollback: waiting for the database to wake ... (up to 1s, "
        "--db-connect-timeout; first attempt: OperationalError: "
    )
    assert (
        lines[-1].startswith("cron-dryrun rollback: postgresql://***@127.0.0.1:")
        and "the database did not answer within 1s (" in lines[-1]
    )
    assert "Rollback-Pw-5ecret" not in out + err
    assert out == ""  # no count, no statement: nothing was asked of the database
    assert not (tmp_path / "audit").exists()


@pytest.mark.parametrize("given", ["flag", "env"])
def test_a_bad_dry_run_start_is_refused_naming_the_option_its_variable_and_the_form(
    given: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checked where it enters, as gate and archive check it: before any connection."""
    monkeypatch.setenv("DRY_RUN_START", "yesterday" if given == "env" else "")
    flag = ["--dry-run-start", "yesterday"] if given == "flag" else []
    code = main(["rollback", "--since", "2025-10-07T00:00:00Z", "--database-url",
                 f"postgresql://suite@127.0.0.1:{free_port()}/app", "--audit-dir",
                 str(tmp_path / "audit"), "--yes", *flag])  # fmt: skip
    assert code == 2
    out, err = capsys.readouterr()
    assert err.strip() == (
        "cron-dryrun rollback: --dry-run-start / DRY_RUN_START: expected an ISO time like "
        "2025-10-07T02:00:00Z (got 'yesterday')"
    )
    assert out == "" and not (tmp_path / "audit").exists()


def test_rollback_refuses_sslmode_disable_to_a_remote_database_before_any_connection(
    tmp_path: Path,
) -> None:
    """The only command that writes to the database gets the TLS rule of every connection
    (config.db_url.secure_dsn): sslmode=disable to another machine is refused, said, and
    nothing is resolved or sent (the child's sockets are guarded)."""
    log = tmp_path / "netguard.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "cron_dryrun.cli", "rollback", "--since", "2025-10-07T00:00:00Z",
         "--dry-run-start", "2025-10-06T00:00:00Z", "--audit-dir", str(tmp_path / "audit"),
         "--yes", "--db-connect-timeout", "1"],
        env=guarded_env(clean_env(DATABASE_URL="postgresql://app:Rb-Neon-Pw-93@ep-rollback.eu-"
                                  "central-1.aws.neon.tech/neondb?sslmode=disable"), log),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        "cron-dryrun rollback: DATABASE_URL: sslmode=disable sends the database password and "
        "every row in clear text to ep-rollback.eu-central-1.aws.neon.tech"
    )
    assert "Rb-Neon-Pw-93" not in result.stdout + result.stderr
    assert result.stdout == "" and not (tmp_path / "audit").exists()
    assert netguard_attempts(log) == []


def test_a_bad_db_connect_timeout_in_the_environment_is_a_usage_error_before_any_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read by the settings' row, as `diff` and a dry run read it: a usage error, exit 2
    like every bad option (it was 1), naming the variable and the range."""
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "900")
    code = main(["rollback", "--since", "2025-10-07T00:00:00Z", "--database-url",
                 f"postgresql://suite@127.0.0.1:{free_port()}/app", "--audit-dir",
                 str(tmp_path / "audit"), "--dry-run-start", "2025-10-06T00:00:00Z", "--yes"])  # fmt: skip
    assert code == 2
    out, err = capsys.readouterr()
    assert err == (
        "cron-dryrun rollback: DB_CONNECT_TIMEOUT: expected seconds in (0, 600] (got '900')\n"
    )
    assert out == "" and not (tmp_path / "audit").exists()
