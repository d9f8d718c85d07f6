"""Settings: CLI > env > ini > default, validated once, errors naming option and variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from cron_dryrun.config.settings import Settings, SettingsError, resolve_settings

# -- pure layers ------------------------------------------------------------------------------------


def test_defaults() -> None:
    s = resolve_settings()
    assert s == Settings()
    assert (s.cron_method, s.cron_timeout, s.parity_threshold, s.db_backend) == (
        "POST",
        300.0,
        0.02,
        "auto",
    )
    assert s.audit_dir == Path("audit") and not s.is_remote


def test_cli_beats_env_beats_ini() -> None:
    cli = {"cron_timeout": "5"}
    env = {"CRON_TIMEOUT": "6", "PARITY_THRESHOLD": "0.05"}
    ini = {"cron_timeout": "7", "parity_threshold": "0.1", "run_label": "From ini"}
    s = resolve_settings(cli=cli, env=env, ini=ini)
    assert (s.cron_timeout, s.parity_threshold, s.run_label) == (5.0, 0.05, "From ini")


def test_secret_comes_from_env_only() -> None:
    s = resolve_settings(cli={"cron_secret": "from-cli"}, env={"CRON_SECRET": "from-env"})
    assert s.cron_secret == "from-env"
    assert "from-env" not in repr(s)


def test_exports_and_allowed_codes_split() -> None:
    s = resolve_settings(
        env={"OPENAI_EXPORT": "a.csv:b", "ALLOW_ISSUE_CODE": "pricing_fallback, SCOPE_MISSING"}
    )
    assert s.openai_export == (Path("a.csv"), Path("b"))
    assert s.allow_issue_code == ("PRICING_FALLBACK", "SCOPE_MISSING")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"cli": {"cron_url": "staging.cogni-track.app"}},
            "--cron-url / CRON_URL: expected a URL like https://host/..., with a scheme among https, http, and any user or password percent-encoded (got 'staging.cogni-track.app')",
        ),
        (
            {"env": {"DATABASE_URL": "mysql://u:pw@h/db"}},
            "--database-url / DATABASE_URL: expected a URL like postgresql://host/..., with a scheme among postgresql, postgres, and any user or password percent-encoded (value not shown: it may hold a password)",
        ),
        (
            {"env": {"DB_BACKEND": "sqlite"}},
            "--db-backend / DB_BACKEND: expected one of auto, url, testcontainers, embedded (got 'sqlite')",
        ),
        ({"cli": {"fault": "gremlins"}}, "--fault: unknown fault; known faults: none, auth-open"),
        (
            {"env": {"PARITY_THRESHOLD": "2"}},
            "--parity-threshold / PARITY_THRESHOLD: expected a fraction strictly between 0 and 1 (0.02 means 2 %) (got '2')",
        ),
        (
            {"env": {"PARITY_THRESHOLD": "0"}},
            "--parity-threshold / PARITY_THRESHOLD: expected a fraction strictly between 0 and 1",
        ),
        (
            {"env": {"PARITY_THRESHOLD": "lots"}},
            "--parity-threshold / PARITY_THRESHOLD: expected a number (got 'lots')",
        ),
        (
            {"env": {"CRON_METHOD": "PUT"}},
            "--cron-method / CRON_METHOD: expected POST or GET (got 'PUT')",
        ),
        (
            {"env": {"CRON_TIMEOUT": "-1"}},
            "--cron-timeout / CRON_TIMEOUT: expected seconds in (0, 3600] (got '-1')",
        ),
        (
            {"env": {"DRY_RUN_START": "yesterday"}},
            "--dry-run-start / DRY_RUN_START: expected an ISO time like 2025-10-07T02:00:00Z (got 'yesterday')",
        ),
        (
            {"env": {"ALLOW_ISSUE_CODE": "NOPE"}},
            "--allow-issue-code / ALLOW_ISSUE_CODE: unknown issue code; the app emits SCHEMA_MISSING",
        ),
        (
            {
                "cli": {"fault": "flag-off"},
                "env": {"CRON_URL": "https://staging.cogni-track.app/api/cron/daily-usage"},
            },
            "--fault flag-off injects a fault into the local stand-in only, but --cron-url / CRON_URL points at a remote cron: drop --fault, or unset CRON_URL to use the local stack",
        ),
        (
            {"env": {"DB_BACKEND": "url"}},
            "--db-backend / DB_BACKEND is 'url' but no database URL was given: set DATABASE_URL or pass --database-url",
        ),
        (
            {"env": {"DB_CONNECT_TIMEOUT": "0"}},
            "--db-connect-timeout / DB_CONNECT_TIMEOUT: expected seconds in (0, 600] (got '0')",
        ),
        (
            {"env": {"CRON_CA_BUNDLE": "/nonexistent/ca.pem"}},
            "--ca-bundle / CRON_CA_BUNDLE: no such file: give the CA bundle's PEM file (got '/nonexistent/ca.pem')",
        ),
        (
            {"env": {"SSL_CERT_FILE": "/nonexistent/ca.pem"}},
            "SSL_CERT_FILE: no such file (got '/nonexistent/ca.pem'): point it at a PEM bundle or unset it",
        ),
        (
            {"env": {"DATABASE_URL": "postgres://u:pw@db.example.com/app?sslmode=disable"}},
            "--database-url / DATABASE_URL: sslmode=disable sends the database password and every row in clear text to db.example.com",
        ),
        (
            {"cli": {"standin_compress": "lz4"}},
            "--standin-compress: expected one of none, gzip, br, zstd (got 'lz4')",
        ),
        (
            {
                "cli": {"standin_compress": "br"},
                "env": {"CRON_URL": "https://staging.cogni-track.app/api/cron/daily-usage"},
            },
            "--standin-compress / --standin-protection change the local stand-in only, but --cron-url / CRON_URL points at a remote cron: drop them, or unset CRON_URL",
        ),
    ],
)
def test_bad_values_name_the_option_and_variable(kwargs: dict, message: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        resolve_settings(**kwargs)
    assert str(excinfo.value).startswith(message)


def test_remote_missing_configuration_names_each_variable() -> None:
    s = resolve_settings(env={"CRON_URL": "https://staging.cogni-track.app/api/cron/daily-usage"})
    assert [m.split(" ")[0] for m in s.missing_remote_configuration()] == [
        "CRON_SECRET",
        "DATABASE_URL",
        "OPENAI_EXPORT",
    ]


# -- each layer through pytest itself ------------------------------------------------------------------

PROBE = """
def test_probe(dryrun_settings):
    print("TIMEOUT=%s LABEL=%s" % (dryrun_settings.cron_timeout, dryrun_settings.run_label))
"""


@pytest.fixture
def probe(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for var in (
        "CRON_URL",
        "CRON_SECRET",
        "DATABASE_URL",
        "CRON_TIMEOUT",
        "RUN_LABEL",
        "OPENAI_EXPORT",
    ):
        monkeypatch.delenv(var, raising=False)
    pytester.makepyfile(test_probe=PROBE)
    return pytester


def run_probe(p: pytest.Pytester, *args: str) -> str:
    result = p.runpytest("-s", "-p", "no:cacheprovider", *args)
    assert result.ret == 0, result.stdout.str()
    return result.stdout.str()


def test_layer_default(probe: pytest.Pytester) -> None:
    assert "TIMEOUT=300.0 LABEL=Dry run" in run_probe(probe)


def test_layer_ini(probe: pytest.Pytester) -> None:
    probe.makeini("[pytest]\ncron_dryrun_cron_timeout = 42\ncron_dryrun_run_label = Ini label\n")
    assert "TIMEOUT=42.0 LABEL=Ini label" in run_probe(probe)


def test_layer_env_beats_ini(probe: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    probe.makeini("[pytest]\ncron_dryrun_cron_timeout = 42\n")
    monkeypatch.setenv("CRON_TIMEOUT", "43")
    assert "TIMEOUT=43.0" in run_probe(probe)


def test_layer_cli_beats_env(probe: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRON_TIMEOUT", "43")
    assert "TIMEOUT=44.0" in run_probe(probe, "--cron-timeout", "44")


def test_bad_value_stops_the_run_at_start(probe: pytest.Pytester) -> None:
    result = probe.runpytest("--parity-threshold", "1.5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: cron-dryrun: --parity-threshold / PARITY_THRESHOLD: expected a fraction strictly between 0 and 1 (0.02 means 2 %) (got '1.5')"
        ]
    )


def test_fault_with_remote_target_stops_the_run(
    probe: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRON_URL", "https://staging.cogni-track.app/api/cron/daily-usage")
    result = probe.runpytest("--fault", "flag-off")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: cron-dryrun: --fault flag-off injects a fault into the local stand-in only*"]
    )


def test_a_remote_database_gets_tls_and_insecure_needs_the_flag() -> None:
    remote = "postgres://u:pw@ep-x-pooler.neon.tech/app"
    assert (
        resolve_settings(env={"DATABASE_URL": remote}).database_url == remote + "?sslmode=require"
    )
    local = "postgresql://postgres@127.0.0.1:5432/app"
    assert resolve_settings(env={"DATABASE_URL": local}).database_url == local
    insecure = remote + "?sslmode=disable"
    s = resolve_settings(cli={"allow_insecure_db": True}, env={"DATABASE_URL": insecure})
    assert s.database_url == insecure and s.db_connect_timeout == 30.0


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        (
            "postgresql://suite:P@ss:w/rd%#Q1@127.0.0.1:5432/app",
            "--database-url / DATABASE_URL: more than one '@' in the URL: an '@' in the password "
            "must be encoded; percent-encode the password ('@' as %40, ':' as %3A, '/' as %2F, "
            "'?' as %3F, '#' as %23, a space as %20, '%' as %25) "
            "(value not shown: it may hold a password)",
        ),
        (
            "postgresql://suite:Pw%ZZsecret@127.0.0.1/app",
            "--database-url / DATABASE_URL: a '%' that is not a percent-escape (%XX): "
            "percent-encode the password ('@' as %40, ':' as %3A, '/' as %2F, '?' as %3F, "
            "'#' as %23, a space as %20, '%' as %25) (value not shown: it may hold a password)",
        ),
        (
            "postgresql://suite:Pw%C3secret@127.0.0.1/app",
            "--database-url / DATABASE_URL: the password's percent-encoding is not valid UTF-8 "
            "(value not shown: it may hold a password)",
        ),
        (
            "hots=db.internal password=Secr3tPw",
            "--database-url / DATABASE_URL: not a libpq keyword DSN: unknown keyword(s) hots "
            "(value not shown: it may hold a password)",
        ),
    ],
)
def test_a_bad_database_url_is_refused_without_echoing_it(dsn: str, message: str) -> None:
    with pytest.raises(SettingsError) as excinfo:
        resolve_settings(env={"DATABASE_URL": dsn})
    assert str(excinfo.value) == message


def test_a_keyword_dsn_is_accepted_and_secrets_come_from_the_environment() -> None:
    s = resolve_settings(
        env={
            "CRON_URL": "https://ops:url-Pw-1234@staging.cogni-track.app/api/cron/daily-usage",
            "DATABASE_URL": "host=127.0.0.1 dbname=app user=suite password='a b\\' c'",
            "PGPASSWORD": "pg-password-from-env",
        }
    )
    assert s.database_url == "host=127.0.0.1 dbname=app user=suite password='a b\\' c'"
    assert s.extra_secrets == ("pg-password-from-env",)
    assert s.target_name == "https://***@staging.cogni-track.app/api/cron/daily-usage"
    shown = repr(s)
    assert "a b" not in shown and "pg-password" not in shown and "url-Pw" not in shown


def test_the_environment_only_values_are_rows_of_the_table_marked_secret_where_they_are() -> None:
    from cron_dryrun.config.options import ENVIRONMENT_ONLY_OPTIONS, OPTIONS

    rows = {spec.env: spec for spec in ENVIRONMENT_ONLY_OPTIONS}
    assert set(rows) == {
        "CRON_SECRET", "VERCEL_AUTOMATION_BYPASS_SECRET", "SSL_CERT_FILE", "GITHUB_ACTIONS",
        "GITHUB_STEP_SUMMARY", "OPENAI_ADMIN_KEY", "OPENAI_ADMIN_KEYS", "CRON_DRYRUN_TARGET",
        "CRON_DRYRUN_EVIDENCE_KEY",
    }  # fmt: skip
    assert all(spec.flag is None and not spec.has_ini for spec in rows.values())
    assert {env for env, spec in rows.items() if spec.secret} == {
        "CRON_SECRET", "VERCEL_AUTOMATION_BYPASS_SECRET", "OPENAI_ADMIN_KEY",
        "OPENAI_ADMIN_KEYS", "CRON_DRYRUN_EVIDENCE_KEY",
    }  # fmt: skip
    assert not {spec.name for spec in ENVIRONMENT_ONLY_OPTIONS} & {spec.name for spec in OPTIONS}


def test_a_secret_is_taken_as_given_so_its_stray_blank_is_reported_not_hidden() -> None:
    s = resolve_settings(env={"CRON_SECRET": " padded\n", "GITHUB_ACTIONS": " TRUE "})
    assert s.cron_secret == " padded\n" and s.github_actions is True
    assert resolve_settings(env={"CRON_SECRET": ""}).cron_secret is None
    keys = resolve_settings(env={"OPENAI_ADMIN_KEYS": " , ", "OPENAI_ADMIN_KEY": "sk-admin-one"})
    assert keys.openai_admin_keys == ()  # OPENAI_ADMIN_KEYS set (to nothing) wins, as before
