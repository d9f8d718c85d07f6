"""The preflight: every problem found before anything is sent, reported together, exit 4."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import psycopg
import pytest
from neon_compute import SleepingCompute
from suite_runs import clean_env, guarded_env, netguard_attempts, recorded_files, run_acceptance

from cron_dryrun.session.preflight import (
    check_audit_dir,
    check_database,
    check_exports,
    check_secret,
    check_target,
    run_preflight,
)
from cron_dryrun.target.database import create_app_database, database_name, with_database
from cron_dryrun.target.embedded import free_port

HEADER = (
    "start_time,end_time,start_time_iso,end_time_iso,project_id,num_model_requests,user_id,"
    "api_key_id,model,batch,service_tier,input_tokens,output_tokens\n"
)


def export_file(folder: Path, name: str = "export.csv") -> Path:
    path = folder / name
    path.write_text(HEADER)
    return path


# -- each area on its own -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (
            "s3cret-s3cret-s3cret\n",
            "CRON_SECRET has leading or trailing whitespace (often a newline read from a file "
            "or `echo`): strip it",
        ),
        (
            "s3cr\x07t-s3cret-s3cret",
            "CRON_SECRET contains a control character (code 7) at position 5: a header value "
            "must be printable ASCII",
        ),
        (
            "sécret-sécret-sécret",
            "CRON_SECRET contains a non-ASCII character at position 2: a header value must be "
            "printable ASCII",
        ),
        ("   ", "CRON_SECRET is blank: set it to the secret the app expects"),
    ],
)
def test_a_malformed_secret_is_refused_without_echoing_it(secret: str, message: str) -> None:
    assert check_secret(secret) == ([message], [])


def test_a_short_secret_is_accepted_with_a_warning() -> None:
    assert check_secret("GO") == (
        [],
        [
            "warning: CRON_SECRET is 2 characters long: a secret shorter than 16 characters is "
            "weak, and hard to redact (it may also be ordinary text); use a long random secret"
        ],
    )
    assert check_secret("a-long-random-secret-0123") == ([], [])


def test_exports_are_checked_by_their_header(tmp_path: Path) -> None:
    good = export_file(tmp_path)
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(HEADER.encode()))  # read through, as the readers do
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"\x1f\x8bnot gzip at all")
    binary = tmp_path / "export.xlsx"
    binary.write_bytes(b"PK\x03\x04\x00\x00binary")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("date,cost\n2025-10-07,1.5\n")
    folder = tmp_path / "none"
    folder.mkdir()
    (folder / "readme.md").write_text("no exports here")
    assert check_exports([good, packed]) == []
    assert check_exports([good, tmp_path / "exports.json"]) == [
        f"OpenAI usage export not found: {tmp_path / 'exports.json'} (--openai-export / OPENAI_EXPORT)"
    ]
    problems = check_exports([broken, binary, empty, wrong, folder])
    assert problems[0].startswith(f"export file {broken}: not a readable gzip file (")
    assert problems[1:] == [
        f"export file {binary}: not a CSV/TSV/JSON export (binary content)",
        f"export file {empty}: empty file: download the export again",
        f"export file {wrong}: header lacks column(s): project_id, api_key_id, user_id, model, "
        "start_time_iso or start_time, end_time_iso or end_time; is this the OpenAI completions "
        "usage export? (download it again from the usage dashboard: its header starts with "
        "start_time,end_time,start_time_iso,end_time_iso,project_id,...)",
        f"OpenAI usage export folder {folder} holds no export files (.csv, .tsv, .txt, .json, "
        ".jsonl, each also .gz) (--openai-export / OPENAI_EXPORT)",
    ]
    pages = tmp_path / "pages.json"
    pages.write_text('{"object": "page", "data": []}')
    assert check_exports([good, pages, tmp_path]) == check_exports([broken, empty, wrong])


def test_userinfo_in_cron_url_is_refused_without_showing_it() -> None:
    assert check_target("https://ops:Url-Pw-1@staging.cogni-track.app/api/cron/daily-usage") == [
        "CRON_URL https://***@staging.cogni-track.app/api/cron/daily-usage carries a user and "
        "password: the client would send them as Basic auth in place of the bearer secret; "
        "remove them from the URL"
    ]
    assert check_target("http://127.0.0.1:8080/api/cron/daily-usage") == []


def test_audit_folder_is_probed_and_left_as_it_was(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "audit"
    assert check_audit_dir(fresh) == []
    assert not (tmp_path / "new").exists()  # created for the probe, removed again
    existing = tmp_path / "audit"
    existing.mkdir()
    assert check_audit_dir(existing) == [] and list(existing.iterdir()) == []
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert check_audit_dir(blocker / "audit") == [
        f"the audit folder {blocker / 'audit'} cannot be created or written (Not a directory): "
        "pass a writable --audit-dir / AUDIT_DIR"
    ]


def test_database_checks_connection_tables_and_read_privilege(pg_server: Any) -> None:
    app_dsn = create_app_database(pg_server.dsn)
    assert check_database(app_dsn) == []
    empty = f"cron_dryrun_pre_{database_name(app_dsn)[-8:]}"
    role = f"reader_{database_name(app_dsn)[-8:]}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {empty}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
    assert check_database(with_database(pg_server.dsn, empty)) == [
        f"table {table} does not exist in DATABASE_URL's database (the app's SCHEMA_MISSING "
        "condition): point DATABASE_URL at the app's database, or run the app's migrations first"
        for table in ("usage_events", "provider_keys")
    ]
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute("REVOKE ALL ON usage_events FROM PUBLIC")
    stranger = app_dsn.replace("//postgres", f"//{role}", 1)
    assert stranger != app_dsn, app_dsn
    assert check_database(stranger) == [
        "the DATABASE_URL role may not read table usage_events: "
        "GRANT SELECT ON usage_events TO <that role>",
        "the DATABASE_URL role may not read table provider_keys: "
        "GRANT SELECT ON provider_keys TO <that role>",
    ]


def test_an_unreachable_database_is_one_problem_without_its_password() -> None:
    port = free_port()
    dsn = f"postgresql://suite:Secr3tPw-do-not-print@127.0.0.1:{port}/app"
    (problem,) = check_database(dsn, connect_timeout_s=2)
    assert problem.startswith("DATABASE_URL: nothing listens at 127.0.0.1:") and problem.endswith(
        ": check the host and port in DATABASE_URL (a sleeping Neon compute "
        "still accepts the connection; it is not waited for) (3 attempts; last error: "
        'OperationalError: connection failed: connection to server at "127.0.0.1", port '
        f"{port} failed: Connection refused)"
    )
    assert "Secr3tPw" not in problem


def test_every_area_is_checked_even_when_another_fails(tmp_path: Path) -> None:
    result = run_preflight(
        cron_url="http://staging.cogni-track.app/api/cron/daily-usage",
        secret="x\n",
        database_dsn=f"postgresql://suite@127.0.0.1:{free_port()}/app",
        exports=[tmp_path / "missing.csv"],
        audit_dir=tmp_path / "a-file" / "audit",
    )
    (tmp_path / "a-file").write_text("")
    assert [area for area, problems in result.findings.items() if problems] == [
        "secret",
        "target",
        "database",
        "exports",
    ]
    assert not result.ok and len(result.problems) == 4


# -- as an operator meets it: nothing leaves, nothing is written ----------------------------------


def test_a_broken_remote_run_lists_every_problem_and_sends_nothing(
    tmp_path: Path, counting_cron: tuple[str, list[str]], sleeping_neon: SleepingCompute
) -> None:
    url, hits = counting_cron
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(b"\x1f\x8bnot gzip at all")
    audit = tmp_path / "audit"
    log = tmp_path / "netguard.jsonl"
    env = guarded_env(
        clean_env(
            CRON_URL=url,
            CRON_SECRET="a-long-random-secret-0123",
            DATABASE_URL=sleeping_neon.dsn("suite", "app", "Secr3tPw"),
            OPENAI_EXPORT=f"{tmp_path / 'missing.csv'}:{packed}",
            DB_CONNECT_TIMEOUT="2",
        ),
        log,
    )
    result = run_acceptance(f"--audit-dir={audit}", env=env, timeout=120)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    lines = result.stderr.splitlines()
    assert f"ERROR: cron-dryrun: the preflight against CRON_URL={url} found 3 problem(s):" in lines
    assert any(
        line.startswith("  - DATABASE_URL: the database did not answer within 2s (")
        for line in lines
    )
    assert (
        f"  - OpenAI usage export not found: {tmp_path / 'missing.csv'} (--openai-export / OPENAI_EXPORT)"
        in lines
    )
    assert any(
        line.startswith(f"  - export file {packed}: not a readable gzip file") for line in lines
    )
    assert (
        "Nothing was triggered. Fix every problem above, or unset CRON_URL to run on the local stack."
        in lines
    )
    assert hits == []
    assert recorded_files(audit) == []  # only the HTML report says why
    assert "Secr3tPw" not in result.stdout + result.stderr
    assert netguard_attempts(log) == []


def test_plain_http_to_staging_is_refused_without_a_connection(tmp_path: Path) -> None:
    """The issue's reproduction: the secret went out in clear 9 times before "not https"."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    log = tmp_path / "netguard.jsonl"
    env = guarded_env(
        clean_env(
            CRON_URL="http://staging.cogni-track.app/api/cron/daily-usage",
            CRON_SECRET="s3cret\n",
            DATABASE_URL=f"postgresql://suite@127.0.0.1:{free_port()}/app",
            OPENAI_EXPORT=str(tmp_path / "missing.csv"),
            DB_CONNECT_TIMEOUT="2",
        ),
        log,
    )
    result = run_acceptance(f"--audit-dir={blocker / 'audit'}", env=env, timeout=120)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    lines = result.stderr.splitlines()
    assert "found 5 problem(s):" in lines[0]
    assert (
        "  - CRON_URL http://staging.cogni-track.app/api/cron/daily-usage is not https: the bearer "
        "secret would cross the network in clear; use https://"
    ) in lines
    assert any("CRON_SECRET has leading or trailing whitespace" in line for line in lines)
    assert any("the audit folder" in line and "cannot be created" in line for line in lines)
    assert netguard_attempts(log) == []
    assert "s3cret" not in result.stdout + result.stderr
