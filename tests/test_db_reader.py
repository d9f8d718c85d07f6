"""The two database readers (ADBC into DuckDB, COPY csv) on the same real PostgreSQL.

Both must give the same report for the same database and export; ADBC falls back to the
CSV path when it cannot be used, and says so in the report and on the terminal.
"""

from __future__ import annotations

import gzip
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest

from cron_dryrun.parity import db_reader
from cron_dryrun.parity.db_reader import UsageReader
from cron_dryrun.parity.db_side import keyday_cells_sql
from cron_dryrun.parity.formats import METRIC_COLUMNS, TOTALS_COLUMNS
from cron_dryrun.parity.pipeline import reconcile
from cron_dryrun.parity.report import report_dict
from cron_dryrun.parity.rules import DiffResult
from cron_dryrun.parity.usage_arrow import LoadedKeyDays, load_keydays
from cron_dryrun.parity.usage_totals import unrecorded_probe
from cron_dryrun.target.database import read_only, read_only_conninfo
from tests.test_diff_command import D6, D7, SCHEMA, diff, midnight, only_report, seed
from tests.test_exports import bucket_row, write_export

D5, D8 = D6 - timedelta(days=1), D7 + timedelta(days=1)
# what differs between two runs of the same diff, whatever the reader
VOLATILE = ("generatedAt", "elapsedSeconds", "report", "detail", "dbReader", "dbReaderFallback")


def varied_rows() -> list[dict[str, object]]:
    """usage_events rows exercising every rule the grouping must keep."""
    rows: list[dict[str, object]] = []
    for day in (D6, D7):
        # matched key-days, one with hourly rows that roll up into the day
        rows.append({"window_start": midnight(day), "tokens_out": 5_000, "num_model_requests": 3})
        rows.extend(
            {
                "window_start": midnight(day) + timedelta(hours=h),
                "window_end": midnight(day) + timedelta(hours=h + 1),
                "openai_user_id": "user_h",
                "tokens_in": 10 * h,
                "tokens_out": 7,
                "input_cached_tokens": h,
            }
            for h in range(24)
        )
    rows += [
        # drift on D7 (+4 %), and a zero-sum key-day
        {"openai_user_id": "user_d", "tokens_out": 104_000},
        {"openai_user_id": "user_z", "tokens_in": 0, "tokens_out": 0, "num_model_requests": 0},
        # every breakdown metric NULL (not recorded by ingestion) on a matched key-day
        {
            "openai_user_id": "user_n",
            **{
                m: None
                for m in ("input_uncached_tokens", "input_text_tokens", "output_text_tokens")
            },
        },
        # legacy rows without ids, tier or batch: counted apart, never compared
        {
            "project_id": None,
            "openai_api_key_id": None,
            "openai_user_id": None,
            "service_tier": None,
            "batch": None,
            "tokens_in": 33,
        },
        {"project_id": "", "openai_api_key_id": "", "openai_user_id": "", "tokens_in": 44},
        # flag off: windows crossing midnight (not aligned), and one with no end
        {
            "window_start": midnight(D7) + timedelta(hours=2),
            "window_end": midnight(D7) + timedelta(hours=26),
            "openai_user_id": "user_x",
        },
        {"window_end": None, "openai_user_id": "user_open"},
        # only in the DB: odd ids (comma, quotes, unicode, an empty tier), batch NULL and true
        {"project_id": 'pro,"j', "openai_user_id": "usér ✓", "service_tier": None, "batch": None},
        {"openai_user_id": "user_b", "batch": True, "model": "o3-mini"},
        # outside the range: never read
        {"window_start": midnight(D5), "openai_user_id": "user_old", "tokens_out": 1},
        {"window_start": midnight(D8), "openai_user_id": "user_new", "tokens_out": 1},
    ]
    return rows


def varied_export(path: Path) -> Path:
    rows: list[dict[str, str] | str] = []
    for day in (D6, D7):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        rows.append(bucket_row(start, output_tokens=5_000, num_model_requests=3))
        rows.append(
            bucket_row(
                start,
                user="user_h",
                input_tokens=sum(10 * h for h in range(24)),
                output_tokens=7 * 24,
                input_cached_tokens=sum(range(24)),
                num_model_requests=24,
            )
        )
    d7 = datetime(2025, 10, 7, tzinfo=UTC)
    rows += [
        bucket_row(d7, user="user_d", output_tokens=100_000),
        bucket_row(d7, user="user_z", input_tokens=0, output_tokens=0, num_model_requests=0),
        # the DB never recorded these on D7 (NULL in every row): a warning, both paths alike
        bucket_row(d7, user="user_n", input_uncached_tokens=80, input_text_tokens=90),
        bucket_row(d7, user="user_only_export", output_tokens=42),
        bucket_row(d7, user="", project="", key="", output_tokens=9),  # no ids
    ]
    return write_export(path, rows)


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in VOLATILE}


def detail_lines(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return sorted(
            (json.loads(line) for line in fh), key=lambda d: json.dumps(d, sort_keys=True)
        )


def run_reader(dsn: str, export: Path, work: Path, choice: str) -> DiffResult:
    work.mkdir()
    return reconcile(
        [export],
        UsageReader(dsn, choice),
        first_day=D6,
        last_day=D7,
        open_from=D8,
        detail_path=work / "detail.jsonl.gz",
        now=datetime(2025, 10, 8, 2, tzinfo=UTC),
        unrecorded_probe=unrecorded_probe(dsn),  # as the command and the suite pass it
    )


def test_both_readers_give_identical_reports(app_database: str, tmp_path: Path) -> None:
    seed(app_database, varied_rows())
    export = varied_export(tmp_path / "export.csv")
    adbc = run_reader(app_database, export, tmp_path / "adbc", "adbc")
    csv = run_reader(app_database, export, tmp_path / "csv", "copy-csv")
    reports = {r.db_reader: report_dict(r) for r in (adbc, csv)}
    assert set(reports) == {"adbc", "copy-csv"}
    for report in reports.values():
        jsonschema.validate(report, SCHEMA)
        assert report["dbReaderFallback"] is None
    assert comparable(reports["adbc"]) == comparable(reports["copy-csv"])
    assert detail_lines(tmp_path / "adbc" / "detail.jsonl.gz") == detail_lines(
        tmp_path / "csv" / "detail.jsonl.gz"
    )
    # the data really exercised the rules (not two empty reports agreeing)
    counts = reports["adbc"]["counts"]
    assert counts["dbRowsWithoutIds"] == 2 and counts["dbUnalignedRows"] == 2
    assert counts["mismatched"] == 1 and counts["missingInDb"] == 1
    assert counts["missingInCsv"] == 2 and counts["matched"] == 6
    assert reports["adbc"]["withoutIds"]["db"]["input_tokens"] == 77
    assert reports["adbc"]["notRecordedByIngestion"] == {
        "2025-10-07": ["input_uncached_tokens", "input_text_tokens"]
    }


def test_rows_that_are_key_days_are_copied_not_grouped_and_read_alike(
    app_database: str, tmp_path: Path
) -> None:
    """The cron writes one row per key-day: ADBC copies those rows instead of grouping them
    (the costly part at 1M rows), and the report is still the CSV path's."""
    rows = [r for r in varied_rows() if r.get("openai_user_id") != "user_h"]
    seed(app_database, rows)
    con = duckdb.connect()
    loaded = load_keydays(read_only_conninfo(app_database), D6, D7, con)
    assert loaded == LoadedKeyDays(grouped=False, keyed=True)
    (copied,) = con.execute("SELECT count(*) FROM db_keydays").fetchone()  # type: ignore[misc]
    assert copied == len(rows) - 2  # the two rows outside the range are never read
    export = varied_export(tmp_path / "export.csv")
    adbc = run_reader(app_database, export, tmp_path / "adbc", "adbc")
    csv = run_reader(app_database, export, tmp_path / "csv", "copy-csv")
    assert (adbc.db_reader, csv.db_reader) == ("adbc", "copy-csv")
    assert comparable(report_dict(adbc)) == comparable(report_dict(csv))
    assert adbc.counts["mismatched"] == 1 and adbc.counts["missingInCsv"] == 2


def test_rows_that_share_a_key_day_are_grouped_as_postgresql_groups_them(
    app_database: str,
) -> None:
    """Hourly windows, and two rows whose key differs only by NULL vs '' (the app's unique
    index reads both as ''; so does the grouping): one key-day each, the rows counted and
    the metrics summed."""
    seed(
        app_database,
        [
            {"openai_user_id": "user_t", "service_tier": None, "batch": None, "tokens_in": 5},
            {
                "window_start": midnight(D7) + timedelta(hours=1),
                "window_end": midnight(D7) + timedelta(hours=2),
                "openai_user_id": "user_t",
                "service_tier": "",
                "batch": False,
                "tokens_in": 7,
            },
            *(
                {
                    "window_start": midnight(D7) + timedelta(hours=h),
                    "window_end": midnight(D7) + timedelta(hours=h + 1),
                    "tokens_out": 2,
                }
                for h in range(3)
            ),
        ],
    )
    con = duckdb.connect()
    assert load_keydays(read_only_conninfo(app_database), D7, D7, con).grouped is True
    keydays = con.execute(
        "SELECT user_id, service_tier, batch, record_count, input_tokens, output_tokens "
        f"FROM ({keyday_cells_sql('db_keydays')}) ORDER BY user_id"
    ).fetchall()
    assert keydays == [("user_a", "default", False, 3, 300, 6), ("user_t", "", False, 2, 12, 20)]
    assert con.execute("SELECT sum(key_days), sum(records) FROM db_stats").fetchone() == (2, 5)


def test_adbc_keeps_a_metric_null_in_every_row_apart_from_zero(
    app_database: str, tmp_path: Path
) -> None:
    seed(
        app_database,
        [
            {"openai_user_id": "user_n", "input_text_tokens": None, "input_audio_tokens": 0},
            {"openai_user_id": "user_m", "input_text_tokens": None, "input_audio_tokens": 0},
            {"openai_user_id": "user_p", "input_text_tokens": 5, "input_audio_tokens": None},
        ],
    )
    con = duckdb.connect()
    load_keydays(read_only_conninfo(app_database), D7, D7, con)
    recorded = con.execute(
        "SELECT sum(recorded_input_text_tokens), sum(recorded_input_audio_tokens), "
        "sum(input_text_tokens), sum(input_audio_tokens) FROM db_stats"
    ).fetchone()
    # input_text_tokens: recorded on 1 of 3 key-days; input_audio_tokens: 0 on 2, NULL on 1
    assert recorded == (1, 2, 5, 0)
    (null_sums,) = con.execute(
        "SELECT count(*) FROM db_keydays WHERE input_text_tokens IS NULL"
    ).fetchone()
    assert null_sums == 2


def unpacked_read(dsn: str, con: Any) -> list[tuple[Any, ...]]:
    """The range's rows as the 22-field read delivers them (usage_arrow.rows_query), in
    TOTALS_COLUMNS: what the packed read must give back, cell for cell."""
    import adbc_driver_manager
    import adbc_driver_postgresql  # type: ignore[import-untyped]

    from cron_dryrun.parity.usage_arrow import rows_query, rows_sql

    database = adbc_driver_postgresql.connect(read_only_conninfo(dsn))
    connection = adbc_driver_manager.AdbcConnection(database)
    statement = adbc_driver_manager.AdbcStatement(connection)
    try:
        statement.set_sql_query(rows_query(D6, D7))
        stream, _ = statement.execute_query()
        con.register("unpacked_stream", stream)
        con.execute(rows_sql("unpacked_stream").replace("TABLE db_keydays", "TABLE unpacked"))
        cols = ", ".join(f'"{c}"' for c in TOTALS_COLUMNS)
        return con.execute(f"SELECT {cols} FROM unpacked ORDER BY ALL").fetchall()
    finally:
        statement.close()
        connection.close()
        database.close()


def test_the_packed_read_gives_back_every_cell_of_the_rows_as_they_are(
    app_database: str,
) -> None:
    """Ten fields leave the server per row instead of 22 (two metrics to an int8, the key
    cells joined, the flags and a NULL mask in two int4): taken apart again in DuckDB, every
    cell is what the 22-field read gives, for int4's extremes, negatives, NULLs and 0s,
    empty and NULL key cells, batch and alignment, a day before 2000."""
    extremes = [2**31 - 1, -(2**31), -1, 0, 1, 65_536, None]
    rows: list[dict[str, object]] = []
    for i, value in enumerate(extremes):
        metrics = {column: value for _, column in METRIC_COLUMNS}
        # and every column its own value, so a metric read from its neighbour shows
        metrics.update(
            {
                column: (i * 1000 + j) * (-1) ** j
                for j, (_, column) in enumerate(METRIC_COLUMNS)
                if j % (i + 2) == 1
            }
        )
        rows.append({"openai_user_id": f"user_{i}", "batch": i % 2 == 0, **metrics})
    rows += [
        {"openai_user_id": None, "project_id": None, "openai_api_key_id": "", "service_tier": None},
        {"openai_user_id": "", "project_id": "", "openai_api_key_id": "", "model": ""},
        {
            "openai_user_id": "user_unaligned",
            "window_start": midnight(D6) + timedelta(hours=23),
            "window_end": midnight(D7) + timedelta(hours=1),
        },
        {
            "openai_user_id": "user_open",
            "window_start": midnight(D6),
            "window_end": None,
            "batch": None,
        },
        {"openai_user_id": "user_ünïcode ✓", "project_id": "proj é"},
    ]
    seed(app_database, rows)
    con = duckdb.connect()
    loaded = load_keydays(read_only_conninfo(app_database), D6, D7, con)
    assert loaded == LoadedKeyDays(grouped=False, keyed=True)
    cols = ", ".join(f'"{c}"' for c in TOTALS_COLUMNS)
    packed = con.execute(
        f"SELECT {cols} FROM ({keyday_cells_sql('db_keydays')}) ORDER BY ALL"
    ).fetchall()
    assert packed == unpacked_read(app_database, con)
    assert len(packed) == len(rows)
    # the extremes really went through: a NULL stays NULL, int4's ends stay themselves
    input_tokens = {r[TOTALS_COLUMNS.index("input_tokens")] for r in packed}
    assert {2**31 - 1, -(2**31), None} <= input_tokens


def test_the_slim_read_fetches_the_keys_of_unmatched_key_days_only_and_reads_alike(
    app_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows that are key-days are read without their key text; once the export's twins
    are offered, only the database key-days without an export twin are fetched again with
    their key (by id, in chunks), and the report is the CSV path's."""
    from cron_dryrun.parity import usage_arrow

    fetched: list[list[int]] = []
    real = usage_arrow.keys_query

    def spy(ids: Any) -> str:
        fetched.append(list(ids))
        return real(ids)

    monkeypatch.setattr(usage_arrow, "keys_query", spy)
    monkeypatch.setattr(usage_arrow, "FETCH_IDS", 1)
    seed(app_database, [r for r in varied_rows() if r.get("openai_user_id") != "user_h"])
    export = varied_export(tmp_path / "export.csv")
    adbc = run_reader(app_database, export, tmp_path / "adbc", "adbc")
    csv = run_reader(app_database, export, tmp_path / "csv", "copy-csv")
    assert comparable(report_dict(adbc)) == comparable(report_dict(csv))
    assert detail_lines(tmp_path / "adbc" / "detail.jsonl.gz") == detail_lines(
        tmp_path / "csv" / "detail.jsonl.gz"
    )
    on_db_side = [d for d in detail_lines(tmp_path / "adbc" / "detail.jsonl.gz") if d.get("db")]
    assert on_db_side and all(len(chunk) == 1 for chunk in fetched)
    # every reported database key-day was fetched; the exact twins' keys never were (one
    # more than the offenders: user_n, NULL in the database, judged as not recorded)
    assert len(on_db_side) <= len(fetched) < adbc.counts["dbKeyDays"]


def test_an_export_side_that_fails_never_leaves_the_database_stage_waiting(
    app_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database stage waits for the export's twins; an export side that raises once
    the stage is waiting withdraws them, so the stage ends instead of waiting on."""
    import threading

    from cron_dryrun.parity import db_side, export_side

    waiting, stages = threading.Event(), []
    real_wait = db_side.TwinExchange.wait

    def wait(self: db_side.TwinExchange) -> Any:
        stages.append(threading.current_thread())
        waiting.set()
        return real_wait(self)

    def broken(*_: Any, **__: Any) -> Any:
        assert waiting.wait(timeout=30), "the database stage never came to wait"
        raise OSError("export unreadable (the test's)")

    seed(app_database, [r for r in varied_rows() if r.get("openai_user_id") != "user_h"])
    monkeypatch.setattr(db_side.TwinExchange, "wait", wait)
    monkeypatch.setattr(export_side, "_read_exports", broken)
    with pytest.raises(OSError, match="the test's"):
        run_reader(app_database, varied_export(tmp_path / "export.csv"), tmp_path / "w", "adbc")
    (stage,) = stages
    stage.join(timeout=30)
    assert not stage.is_alive()


def test_a_key_cell_holding_the_separator_is_read_as_it_is_and_compared_alike(
    app_database: str, tmp_path: Path
) -> None:
    """The packed read joins the key cells with the unit separator; a cell that holds one
    could not be split back, so those rows are read again, field by field, in the same
    transaction, and the report is the CSV path's."""
    rows = [r for r in varied_rows() if r.get("openai_user_id") != "user_h"]
    rows.append({"openai_user_id": "user\x1fsplit", "tokens_out": 77})
    seed(app_database, rows)
    con = duckdb.connect()
    loaded = load_keydays(read_only_conninfo(app_database), D6, D7, con)
    assert loaded == LoadedKeyDays(grouped=False, keyed=False)
    users = {u for (u,) in con.execute("SELECT user_id FROM db_keydays").fetchall()}
    assert "user\x1fsplit" in users
    export = varied_export(tmp_path / "export.csv")
    adbc = run_reader(app_database, export, tmp_path / "adbc", "adbc")
    csv = run_reader(app_database, export, tmp_path / "csv", "copy-csv")
    assert comparable(report_dict(adbc)) == comparable(report_dict(csv))
    assert adbc.counts["missingInCsv"] == 3  # the two of varied_rows and the new key-day
    offender_users = {o.key.user_id for o in adbc.offenders["missingInCsv"]}
    assert "user\x1fsplit" in offender_users


def test_the_command_reads_over_adbc_by_default(app_database: str, tmp_path: Path) -> None:
    """As an operator runs it: a process of its own (which imports only DuckDB's engine)."""
    import subprocess

    from tests.suite_runs import ROOT, clean_env

    seed(app_database, [{"tokens_out": 100_000}])
    export = write_export(tmp_path / "export.csv", [bucket_row(output_tokens=100_000)])
    proc = subprocess.run(
        [sys.executable, "-m", "cron_dryrun.cli", "diff", "--export", str(export),
         "--database-url", app_database, "--from", "2025-10-07", "--to", "2025-10-07",
         "--audit-dir", str(tmp_path / "audit"), "--no-progress"],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "database read: adbc\n" in proc.stdout
    report = only_report(tmp_path)
    assert (report["dbReader"], report["dbReaderFallback"]) == ("adbc", None)


def block_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a platform without the driver's wheel: importing it fails."""
    for name in ("adbc_driver_postgresql", "adbc_driver_manager"):
        monkeypatch.setitem(sys.modules, name, None)


def test_without_the_driver_the_diff_falls_back_to_copy_csv_and_says_so(
    app_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(db_reader.ENV_VAR, raising=False)
    block_the_driver(monkeypatch)
    seed(app_database, [{"tokens_out": 103_000}])
    export = write_export(tmp_path / "export.csv", [bucket_row(output_tokens=100_000)])
    code = diff(tmp_path, "--export", str(export), "--database-url", app_database,
                "--from", "2025-10-07", "--to", "2025-10-07")  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1  # the drift is still found
    assert (
        "database read: copy-csv (ADBC not used: the ADBC PostgreSQL driver is not installed here"
        in out
    )
    report = only_report(tmp_path)
    assert report["dbReader"] == "copy-csv"
    assert "driver is not installed" in str(report["dbReaderFallback"])
    assert report["counts"]["mismatched"] == 1  # type: ignore[index]


def test_asking_for_adbc_explicitly_never_falls_back(
    app_database: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block_the_driver(monkeypatch)
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    code = diff(tmp_path, "--export", str(export), "--database-url", app_database,
                "--from", "2025-10-07", "--to", "2025-10-07", "--db-reader", "adbc")  # fmt: skip
    assert code == 2
    assert "the ADBC PostgreSQL driver is not installed here" in capsys.readouterr().err, (
        "names the cause"
    )


def test_a_refused_connection_fails_as_the_csv_path_does_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADBC cannot connect, so the reader falls back; the CSV path's error is what the
    caller sees (the command prints it with the DSN redacted), and no message of either
    driver carries the password."""
    import psycopg

    from cron_dryrun.target.embedded import free_port

    dsn = f"postgresql://cron:pw-s3cret-x@127.0.0.1:{free_port()}/app"
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    with pytest.raises(psycopg.OperationalError) as raised:
        run_reader(dsn, export, tmp_path / "auto", "auto")
    assert "Connection refused" in str(raised.value)
    assert "pw-s3cret-x" not in str(raised.value)
    with pytest.raises(Exception) as adbc_error:  # what the fallback was about
        run_reader(dsn, export, tmp_path / "adbc", "adbc")
    assert "Connection refused" in str(adbc_error.value)
    assert "pw-s3cret-x" not in db_reader.scrub(str(adbc_error.value), dsn)


def test_a_driver_message_never_carries_the_password() -> None:
    dsn = "host=db.example port=5432 user=cron password=pw-s3cret-x dbname=app"
    text = "FATAL: password pw-s3cret-x rejected; env pg-env-secret"
    env = {"PGPASSWORD": "pg-env-secret"}
    assert db_reader.scrub(text, dsn, env) == (
        "FATAL: password [REDACTED] rejected; env [REDACTED]"
    )


def test_an_unknown_reader_choice_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(db_reader.ENV_VAR, "arrow")
    export = write_export(tmp_path / "export.csv", [bucket_row()])
    code = diff(tmp_path, "--export", str(export), "--database-url", "postgresql://x@h/db")
    assert code == 2
    assert "CRON_DRYRUN_DB_READER/--db-reader must be one of auto, adbc, copy-csv, got 'arrow'" in (
        capsys.readouterr().err
    )


def test_keyword_dsn_and_pgpassword_reach_both_readers_alike(
    pg_server: Any, app_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keyword DSN without a password, PGPASSWORD in the environment, a role that must
    give one (scram): both readers connect, and both fail alike without it."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    seed(app_database, [{"tokens_out": 100_000}])
    role, password = "parity_reader", "pw-Kw-7731"
    with read_only(pg_server.dsn) as probe:
        hba_file = probe.execute("SHOW hba_file").fetchone()[0]  # type: ignore[index]
    restore = _require_password(pg_server.dsn, app_database, role, password, hba_file)
    try:
        params = conninfo_to_dict(app_database)
        params.update(user=role)
        params.pop("password", None)
        keyword_dsn = make_conninfo(**params)  # keyword form: "host=... dbname=... user=..."
        assert "://" not in keyword_dsn
        export = write_export(tmp_path / "export.csv", [bucket_row(output_tokens=100_000)])
        monkeypatch.delenv("PGPASSWORD", raising=False)
        for choice in ("adbc", "copy-csv"):
            with pytest.raises(Exception, match="password"):
                run_reader(keyword_dsn, export, tmp_path / f"nopw-{choice}", choice)
        monkeypatch.setenv("PGPASSWORD", password)
        results = [
            run_reader(keyword_dsn, export, tmp_path / choice, choice)
            for choice in ("adbc", "copy-csv")
        ]
        assert [r.db_reader for r in results] == ["adbc", "copy-csv"]
        assert [r.counts["matched"] for r in results] == [1, 1]
    finally:
        restore()


def _require_password(server_dsn: str, app_dsn: str, role: str, password: str, hba: str) -> Any:
    """A login role that must authenticate with a password (scram-sha-256) on every
    connection type, ahead of the server's trust lines; returns what undoes it."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_dsn, autocommit=True) as conn:
        original = conn.execute("SELECT pg_read_file(%s)", (hba,)).fetchone()[0]  # type: ignore[index]
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        lines = [f"local all {role} scram-sha-256", f"host all {role} all scram-sha-256"]
        _write_server_file(conn, hba, lines + original.splitlines())
        conn.execute("SELECT pg_reload_conf()")
    _until_refused(app_dsn, role)
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT SELECT ON usage_events TO {}").format(sql.Identifier(role)))

    def restore() -> None:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            _write_server_file(conn, hba, original.splitlines())
            conn.execute("SELECT pg_reload_conf()")
        with psycopg.connect(app_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))

    return restore


def _until_refused(app_dsn: str, role: str, timeout_s: float = 5.0) -> None:
    """The postmaster reloads pg_hba.conf on its next loop: connect without a password
    until it is refused (bounded), so the test starts from the new rules."""
    import time

    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {**conninfo_to_dict(app_dsn), "user": role, "connect_timeout": 2}
    params.pop("password", None)
    deadline = time.monotonic() + timeout_s
    for _attempt in range(500):
        try:
            psycopg.connect(make_conninfo(**params), password="").close()
        except psycopg.OperationalError as exc:
            if "password" in str(exc):
                return
            raise
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"pg_hba.conf still lets {role} in without a password")


def _write_server_file(conn: Any, path: str, lines: list[str]) -> None:
    """``lines`` as the server's file ``path``, verbatim (COPY csv with separator and
    quote characters no hba line holds, so nothing is quoted or escaped)."""
    from psycopg import sql

    conn.execute("CREATE TEMP TABLE IF NOT EXISTS hba_lines (n int, line text)")
    conn.execute("TRUNCATE hba_lines")
    kept = [line for line in lines if line.strip()]  # csv would write "" for an empty one
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO hba_lines VALUES (%s, %s)", list(enumerate(kept)))
    conn.execute(
        sql.SQL(
            "COPY (SELECT line FROM hba_lines ORDER BY n) TO {} "
            "(FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02')"
        ).format(sql.Literal(path))
    )


def test_the_driver_reads_with_its_builtin_type_table_or_as_before_without_the_option() -> None:
    """The built-in type table spares the driver a connection of its own to read the
    server's type catalog; a driver that does not know the option still connects."""
    import adbc_driver_manager

    from cron_dryrun.parity import usage_arrow

    calls: list[dict[str, str] | None] = []

    class Driver:
        def __init__(self, knows_option: bool) -> None:
            self.knows_option = knows_option

        def connect(self, conninfo: str, db_kwargs: dict[str, str] | None = None) -> str:
            calls.append(db_kwargs)
            if db_kwargs and not self.knows_option:
                raise adbc_driver_manager.NotSupportedError("NOT_IMPLEMENTED: unknown option")
            return f"database for {conninfo}"

    option = {usage_arrow.TYPE_RESOLVER_OPTION: "builtin"}
    assert usage_arrow._open_database(adbc_driver_manager, Driver(True), "dsn") == (
        "database for dsn"
    )
    assert calls == [option]
    calls.clear()
    assert usage_arrow._open_database(adbc_driver_manager, Driver(False), "dsn") == (
        "database for dsn"
    )
    assert calls == [option, None]
