"""`cron-dryrun diff` and the grouped usage_events query, against a real PostgreSQL."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import jsonschema
import psycopg
import pytest

from cron_dryrun import cli
from cron_dryrun.cli import diff as diff_command
from cron_dryrun.parity import db_reader, usage_totals
from tests.test_exports import bucket_row, write_export

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "schemas" / "diff-report.schema.json").read_text()
)
D6, D7 = date(2025, 10, 6), date(2025, 10, 7)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)  # naive: the columns hold UTC


def seed(dsn: str, rows: list[dict[str, object]]) -> None:
    """A users row and an admin provider key (the FKs), then usage_events rows."""
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO users (id) VALUES ('u1')")
        (key_id,) = conn.execute(
            "INSERT INTO provider_keys (user_id, provider, encrypted_key, iv, auth_tag, usage_mode) "
            "VALUES ('u1', 'openai', 'x', 'x', 'x', 'admin') RETURNING id"
        ).fetchone()  # type: ignore[misc]
        for row in rows:
            start = row.pop("window_start", midnight(D7))
            end = row.pop("window_end", start + timedelta(days=1))  # type: ignore[operator]
            values = {
                "key_id": key_id, "model": "gpt-4o", "tokens_in": 100, "tokens_out": 10,
                "timestamp": start, "window_start": start, "window_end": end,
                "project_id": "proj_a", "openai_api_key_id": "key_a", "openai_user_id": "user_a",
                "service_tier": "default", "batch": False, "num_model_requests": 1, **row,
            }  # fmt: skip
            cols = ", ".join(values)
            marks = ", ".join(["%s"] * len(values))
            conn.execute(
                f"INSERT INTO usage_events ({cols}) VALUES ({marks})", list(values.values())
            )


def diff(tmp_path: Path, *extra: str) -> int:
    return cli.main(["diff", "--audit-dir", str(tmp_path / "audit"), "--no-progress", *extra])


def only_report(tmp_path: Path) -> dict[str, object]:
    (path,) = (tmp_path / "audit" / "telemetry-audit").glob("*-cron-diff*.json")
    data = json.loads(path.read_text())
    jsonschema.validate(data, SCHEMA)
    forced = os.environ.get(db_reader.ENV_VAR)
    if forced:  # the reader the test asked for is the one that read
        assert data["dbReader"] == forced and data["dbReaderFallback"] is None
    return data


@pytest.fixture(params=["adbc", "copy-csv"])
def both_readers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The parity command tests run on each database reader (no fallback)."""
    monkeypatch.setenv(db_reader.ENV_VAR, request.param)
    return str(request.param)


# -- the grouped query ---------------------------------------------------------------------------


def test_totals_query_groups_per_key_and_day_in_postgres(app_database: str) -> None:
    seed(
        app_database,
        [
            # hourly rows of one key roll into the day, like the export's buckets
            *(
                {
                    "window_start": midnight(D7) + timedelta(hours=h),
                    "window_end": midnight(D7) + timedelta(hours=h + 1),
                    "tokens_in": 10,
                    "openai_user_id": "user_h",
                }
                for h in range(3)
            ),
            {"openai_user_id": "user_a", "tokens_in": 7, "input_cached_tokens": 2},
            # legacy standard-mode row: no ids, no tier, no batch
            {
                "project_id": None,
                "openai_api_key_id": None,
                "openai_user_id": None,
                "service_tier": None,
                "batch": None,
            },
            # flag off: a window crossing midnight is grouped apart (not aligned)
            {
                "window_start": midnight(D7) + timedelta(hours=2),
                "window_end": midnight(D7) + timedelta(hours=26),
                "openai_user_id": "user_x",
            },
            # outside the range
            {"window_start": midnight(D6), "openai_user_id": "user_old"},
        ],
    )
    rows = usage_totals.fetch_daily_totals(app_database, D7, D7)
    by_user = {r[3]: r for r in rows}
    assert set(by_user) == {"user_h", "user_a", "", "user_x"}
    day, project, key, _user, model, tier, batch, aligned, records, tokens_in = by_user["user_h"][
        :10
    ]
    assert (day, project, key, model, tier, batch, aligned, records, tokens_in) == (
        D7, "proj_a", "key_a", "gpt-4o", "default", 0, 1, 3, 30,
    )  # fmt: skip
    assert by_user[""][1:7] == ("", "", "", "gpt-4o", "", 0)
    assert by_user["user_x"][7] == 0
    assert by_user["user_a"][9 + 2] == 2  # input_cached_tokens, by name


def test_csv_stream_matches_the_grouped_rows(app_database: str, tmp_path: Path) -> None:
    seed(app_database, [{"openai_user_id": f"user_{i}", "project_id": 'pro,"j'} for i in range(5)])
    out = tmp_path / "totals.csv"
    usage_totals.copy_daily_totals(app_database, D7, D7, out)
    import csv

    with open(out, newline="") as fh:
        lines = list(csv.reader(fh))
    assert len(lines) == 5
    assert {line[1] for line in lines} == {'pro,"j'}


# -- the command ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("both_readers")
def test_parity_passes_with_exit_0(
    app_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(
        app_database, [{"tokens_out": 100_000}, {"openai_user_id": "user_b", "tokens_out": 50_500}]
    )
    export = write_export(
        tmp_path / "export.csv",
        [bucket_row(output_tokens=100_000), bucket_row(user="user_b", output_tokens=50_000)],
    )
    code = diff(
        tmp_path,
        "--export",
        str(export),
        "--database-url",
        app_database,
        "--from",
        "2025-10-07",
        "--to",
        "2025-10-07",
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("parity diff: PASS  (threshold 2 %, 2025-10-07 .. 2025-10-07)")
    data = only_report(tmp_path)
    assert data["verdict"] == "pass"
    assert data["counts"]["matched"] == 2  # type: ignore[index]


@pytest.mark.usefixtures("both_readers")
def test_drift_fails_with_exit_1_and_names_the_offender(
    app_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed(app_database, [{"tokens_out": 103_000}])
    export = write_export(tmp_path / "export.csv", [bucket_row(output_tokens=100_000)])
    monkeypatch.setenv("DATABASE_URL", app_database)  # the fallback when --database-url is absent
    code = diff(tmp_path, "--export", str(export), "--from", "2025-10-07", "--to", "2025-10-07")
    captured = capsys.readouterr()
    assert code == 1
    assert "output_tokens export 100000 db 103000: db is 3.00 % above the export (+3000)" in (
        captured.err
    )
    assert only_report(tmp_path)["verdict"] == "fail"


@pytest.mark.usefixtures("both_readers")
def test_threshold_option_changes_the_verdict(app_database: str, tmp_path: Path) -> None:
    seed(app_database, [{"tokens_out": 103_000}])
    export = write_export(tmp_path / "export.csv", [bucket_row(output_tokens=100_000)])
    args = [
        "--export",
        str(export),
        "--database-url",
        app_database,
        "--from",
        "2025-10-07",
        "--to",
        "2025-10-07",
    ]
    assert diff(tmp_path, *args, "--threshold", "0.05") == 0


def test_no_database_url_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    assert diff(tmp_path, "--export", str(export)) == 2
    assert "--database-url" in capsys.readouterr().err
    assert "DATABASE_URL" in diff_command.NO_DATABASE


@pytest.mark.parametrize("command", ["diff", "rollback"])
@pytest.mark.parametrize("value", ["0", "-5", "601", "nan", "soon"])
def test_a_connect_timeout_out_of_range_is_refused_where_it_enters(
    command: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--db-connect-timeout gets the settings' range, (0, 600] seconds, before anything runs
    (a negative wait gave up at once; 'nan' waited for nothing)."""
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    given = ["--export", str(export)] if command == "diff" else ["--since", "2025-10-07"]
    with pytest.raises(SystemExit) as exited:
        cli.main([command, *given, "--database-url", "postgresql://x@127.0.0.1:1/db",
                  "--db-connect-timeout", value])  # fmt: skip
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"--db-connect-timeout: expected seconds in (0, 600] (got '{value}')" in err


def test_db_connect_timeout_in_the_environment_gets_the_same_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_CONNECT_TIMEOUT", "900")
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    code = diff(
        tmp_path, "--export", str(export), "--database-url", "postgresql://x@127.0.0.1:1/db"
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "cron-dryrun diff: DB_CONNECT_TIMEOUT: expected seconds in (0, 600] (got '900')" in err
    assert not (tmp_path / "audit").exists()


def test_a_bad_day_names_the_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    with pytest.raises(SystemExit):
        diff(tmp_path, "--export", str(export), "--from", "07/10/2025")
    assert "expected a UTC date like 2025-10-07, got '07/10/2025'" in capsys.readouterr().err


def test_an_existing_report_is_never_overwritten(
    app_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    taken = tmp_path / "taken.json"
    taken.write_text("keep me")
    code = diff(
        tmp_path, "--export", str(export), "--database-url", app_database, "--output", str(taken)
    )
    assert code == 2
    assert taken.read_text() == "keep me"
    assert "never overwritten" in capsys.readouterr().err


def test_today_is_open_by_default(app_database: str, tmp_path: Path, both_readers: str) -> None:
    seed(app_database, [{}])
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    args = ["diff", "--export", str(export), "--database-url", app_database, "--no-progress"]
    parsed = cli.build_parser().parse_args([*args, "--audit-dir", str(tmp_path / "audit")])
    now = datetime(2025, 10, 7, 12, tzinfo=UTC)
    env = {db_reader.ENV_VAR: both_readers}
    assert diff_command.run(parsed, env=env, now=now) == 1  # nothing judged: inconclusive
    data = only_report(tmp_path)
    assert data["verdict"] == "inconclusive"
    assert data["windowRange"]["openFrom"] == "2025-10-07"  # type: ignore[index]


def test_split_days_covers_the_range_once() -> None:
    assert usage_totals.split_days(D6, D6, 2) == [(D6, D6)]
    assert usage_totals.split_days(D6, D7, 2) == [(D6, D6), (D7, D7)]
    ten = usage_totals.split_days(D6, D6 + timedelta(days=9), 2)
    assert ten == [(D6, D6 + timedelta(days=4)), (D6 + timedelta(days=5), D6 + timedelta(days=9))]


def test_parallel_parts_and_stats_match_the_grouped_rows(app_database: str, tmp_path: Path) -> None:
    seed(
        app_database,
        [
            {"window_start": midnight(D6), "openai_user_id": "user_6", "tokens_in": 5},
            {"openai_user_id": "user_7", "tokens_in": 0, "tokens_out": 0},
            {"project_id": None, "openai_api_key_id": None, "openai_user_id": None},
            {
                "window_start": midnight(D7) + timedelta(hours=2),
                "window_end": midnight(D7) + timedelta(hours=26),
                "openai_user_id": "user_x",
            },
        ],
    )
    files = usage_totals.copy_daily_totals_parallel(app_database, D6, D7, tmp_path / "t.csv")
    import csv

    def rows(path: Path) -> list[list[str]]:
        return list(csv.reader(path.read_text().splitlines()))

    lines = [line for path in files.totals for line in rows(path)]
    expected = usage_totals.fetch_daily_totals(app_database, D6, D7)
    assert len(files.totals) == 2 and len(lines) == len(expected) == 4
    # zero sums travel as empty cells
    by_user = {line[3]: line for line in lines}
    assert by_user["user_7"][9:11] == ["", ""] and by_user["user_6"][9] == "5"
    assert files.stats is not None
    stats = sorted(rows(files.stats))
    # (day, aligned, has ids, rows, tokens_in ...): per day, split by alignment and ids
    assert [row[:5] for row in stats] == [
        ["2025-10-06", "1", "1", "1", "5"],
        ["2025-10-07", "0", "1", "1", "100"],
        ["2025-10-07", "1", "0", "1", "100"],
        ["2025-10-07", "1", "1", "1", "0"],
    ]


def test_breakdown_metrics_null_in_every_row_are_not_recorded_by_ingestion(
    app_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The app with the provider's older response shape: breakdown columns NULL everywhere."""
    seed(app_database, [{}, {"openai_user_id": "user_b"}])  # breakdown columns left NULL
    breakdown = {"input_uncached_tokens": 90, "input_text_tokens": 100, "output_text_tokens": 10}
    export = write_export(
        tmp_path / "export.csv",
        [bucket_row(**breakdown), bucket_row(user="user_b", **breakdown)],
    )
    code = diff(tmp_path, "--export", str(export), "--database-url", app_database,
                "--from", "2025-10-07", "--to", "2025-10-07")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert (
        "warning: not recorded by ingestion: input_uncached_tokens, input_text_tokens, "
        "output_text_tokens NULL in every DB row of 2025-10-07 (the export has them): not "
        "judged; the other metrics were"
    ) in out
    assert only_report(tmp_path)["notRecordedByIngestion"] == {"2025-10-07": list(breakdown)}


def test_a_breakdown_metric_null_in_some_rows_only_still_fails(
    app_database: str, tmp_path: Path
) -> None:
    seed(app_database, [{"input_text_tokens": 100}, {"openai_user_id": "user_b"}])
    export = write_export(
        tmp_path / "export.csv",
        [bucket_row(input_text_tokens=100), bucket_row(user="user_b", input_text_tokens=100)],
    )
    code = diff(tmp_path, "--export", str(export), "--database-url", app_database,
                "--from", "2025-10-07", "--to", "2025-10-07")  # fmt: skip
    assert code == 1
    data = only_report(tmp_path)
    assert data["notRecordedByIngestion"] == {}
    assert data["counts"]["mismatched"] == 1  # type: ignore[index]


def test_a_model_renamed_on_ingestion_is_explained(
    app_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(app_database, [{"model": "gpt-4-1-mini-2025-04-14"}])
    export = write_export(tmp_path / "export.csv", [bucket_row(model="gpt-4.1-mini-2025-04-14")])
    code = diff(tmp_path, "--export", str(export), "--database-url", app_database,
                "--from", "2025-10-07", "--to", "2025-10-07")  # fmt: skip
    assert code == 1
    assert (
        "parity check fail: model renamed by ingestion: gpt-4.1-mini-2025-04-14 → "
        "gpt-4-1-mini-2025-04-14 (1 key-days, totals equal)\n"
    ) in capsys.readouterr().err


def test_the_threshold_is_read_by_the_settings_row_from_the_flag_and_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No second parser: `diff` refuses what a dry run refuses, in the table's words."""
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    given = ["--export", str(export), "--database-url", "postgresql://x@127.0.0.1:1/db"]
    with pytest.raises(SystemExit) as exited:
        diff(tmp_path, *given, "--threshold", "1.5")
    assert exited.value.code == 2
    assert (
        "argument --threshold: expected a fraction strictly between 0 and 1 (0.02 means 2 %) "
        "(got '1.5')"
    ) in capsys.readouterr().err
    monkeypatch.setenv("PARITY_THRESHOLD", "lots")
    assert diff(tmp_path, *given) == 2
    assert capsys.readouterr().err == (
        "cron-dryrun diff: PARITY_THRESHOLD: expected a number (got 'lots')\n"
    )
    assert not (tmp_path / "audit").exists()


def test_the_exit_codes_are_the_documented_ones() -> None:
    from cron_dryrun.errors import CronDryrunError, ExitCode, SettingsError

    assert [(c.name, int(c)) for c in ExitCode] == [
        ("OK", 0), ("FAIL", 1), ("USAGE", 2), ("INTERRUPTED", 130),
    ]  # fmt: skip
    assert SettingsError.exit_code == ExitCode.USAGE and CronDryrunError.exit_code == 1
    assert issubclass(SettingsError, ValueError)  # `except ValueError` still catches it


def test_a_driver_error_that_echoes_the_dsn_shows_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # ADBC and DuckDB errors may quote the connection string: the last-resort line redacts it
    password = "Pw-echoed-by-the-driver-41"
    dsn = f"postgresql://app:{password}@127.0.0.1:1/app"

    def echoing_driver(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError(f"could not connect with uri={dsn} (password {password})")

    from cron_dryrun.parity import engine

    monkeypatch.setattr(engine, "run_parity", echoing_driver)
    export = write_export(tmp_path / "usage.csv", [bucket_row()])
    code = diff(tmp_path, "--export", str(export), "--database-url", dsn)
    err = capsys.readouterr().err
    assert code == 2
    assert "RuntimeError: could not connect" in err
    assert password not in err and password[:8] not in err
