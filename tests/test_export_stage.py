"""The export read once per run (issue 25): the preflight stages it whole and refuses a
download cut short before anything is sent; parity compares the staged table."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest
from suite_runs import clean_env, guarded_env, recorded_files, run_acceptance

from cron_dryrun.parity import export_side, staging
from cron_dryrun.parity.engine import reconcile
from cron_dryrun.parity.export_side import ExportStage
from cron_dryrun.parity.rules import judge
from cron_dryrun.session.preflight import check_exports
from tests.test_exports import bucket, bucket_row, page, result, write_export
from tests.test_reconcile import D7, D8, NOW, db_row, db_side

CUT = "the download was cut short; download the export again"


def many_rows(path: Path, n: int = 2000) -> Path:
    """An export big enough that a cut gzip still has a readable head (64 KiB sniffed)."""
    return write_export(path, [bucket_row(user=f"user_{i}", input_tokens=i) for i in range(n)])


@pytest.fixture(autouse=True)
def no_stage_left() -> Iterator[None]:
    """Each test starts and ends without a staged export in the process."""
    stage = export_side.claim_stage()
    if stage is not None:
        stage.close()
    yield
    stage = export_side.claim_stage()
    if stage is not None:
        stage.close()


def staged_by_the_preflight(path: Path, monkeypatch: pytest.MonkeyPatch) -> ExportStage:
    """The preflight's stage of ``path``, claimed; any later read of the file fails the test."""
    assert check_exports([path]) == []
    stage = export_side.claim_stage()
    assert stage is not None and stage.staged(path) is not None

    def read_again(*_args: object, **_kwargs: object) -> staging.StagedFile:
        raise AssertionError("the export was read again")

    monkeypatch.setattr(export_side, "stage_file", read_again)
    return stage


def test_a_csv_cut_mid_row_is_refused_with_its_line(tmp_path: Path) -> None:
    whole = many_rows(tmp_path / "whole.csv", 20)
    data = whole.read_bytes()
    last_row = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    cut = tmp_path / "cut.csv"
    cut.write_bytes(data[: len(data) - 1 - len(last_row) // 2])  # half of the last row
    assert cut.read_bytes() != data and not cut.read_bytes().endswith(b"\n")
    # header on line 1, 20 rows on lines 2..21: the last one is cut
    assert check_exports([cut]) == [f"export file {cut}: ends mid-row at line 21: {CUT}"]
    assert check_exports([whole]) == []


def test_a_complete_last_row_without_a_final_newline_is_not_damage(tmp_path: Path) -> None:
    whole = many_rows(tmp_path / "whole.csv", 5)
    trimmed = tmp_path / "trimmed.csv"
    trimmed.write_bytes(whole.read_bytes().rstrip(b"\n"))
    assert trimmed.read_bytes() != whole.read_bytes()
    assert check_exports([trimmed]) == []


def test_a_bad_row_inside_the_file_is_for_parity_not_damage(tmp_path: Path) -> None:
    path = write_export(tmp_path / "e.csv", [bucket_row(), "1,2,3", bucket_row(user="user_b")])
    assert check_exports([path]) == []


def test_a_gzip_cut_at_60_percent_is_refused_as_a_stream_that_ends_early(tmp_path: Path) -> None:
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(many_rows(tmp_path / "e.csv").read_bytes()))
    whole = packed.read_bytes()
    packed.write_bytes(whole[: len(whole) * 6 // 10])
    assert len(packed.read_bytes()) < len(whole)
    assert check_exports([packed]) == [f"export file {packed}: gzip stream ends early: {CUT}"]


def json_export(path: Path, n: int = 2000) -> Path:
    """Admin-API pages (indented, one value over many lines), n results on D7."""
    midnight = datetime(D7.year, D7.month, D7.day, tzinfo=UTC)
    results = [result(user_id=f"user_{i}", input_tokens=i) for i in range(n)]
    path.write_text(json.dumps([page([bucket(midnight, results)])], indent=2))
    return path


def test_a_json_export_cut_mid_value_is_refused_with_its_line(tmp_path: Path) -> None:
    whole = json_export(tmp_path / "whole.json", 20)
    text = whole.read_text()
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2])
    assert cut.read_text() != text
    last_line = text[: len(text) // 2].rstrip().count("\n") + 1
    assert check_exports([cut]) == [f"export file {cut}: ends mid-JSON at line {last_line}: {CUT}"]
    assert check_exports([whole]) == []


def test_invalid_json_that_is_whole_is_for_parity_not_damage(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[{"object": "page", "data": [], "has_more": false},, 1]')
    assert check_exports([path]) == []


def test_a_json_gzip_cut_at_60_percent_is_refused_as_a_stream_that_ends_early(
    tmp_path: Path,
) -> None:
    packed = tmp_path / "export.json.gz"
    packed.write_bytes(gzip.compress(json_export(tmp_path / "e.json").read_bytes()))
    whole = packed.read_bytes()
    packed.write_bytes(whole[: len(whole) * 6 // 10])
    assert len(packed.read_bytes()) < len(whole)
    assert check_exports([packed]) == [f"export file {packed}: gzip stream ends early: {CUT}"]


def test_parity_compares_the_staged_json_without_reading_the_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = json_export(tmp_path / "e.json", 3)
    # the same export read now, without a stage: what the staged one must equal
    unstaged = reconcile(
        [path], db_side([db_row(user=f"user_{i}", input_tokens=i) for i in range(2)]),
        first_day=D7, last_day=D7, open_from=D8, now=NOW,
    )  # fmt: skip
    stage = staged_by_the_preflight(path, monkeypatch)
    try:
        result = reconcile(
            [path], db_side([db_row(user=f"user_{i}", input_tokens=i) for i in range(2)]),
            first_day=D7, last_day=D7, open_from=D8, now=NOW, stage=stage,
        )  # fmt: skip
    finally:
        stage.close()
    assert result.counts == unstaged.counts
    assert result.counts["exportRows"] == 3 and result.counts["missingInDb"] == 1
    assert [o.key.user_id for o in result.offenders["missingInDb"]] == ["user_2"]


def test_parity_compares_the_staged_table_without_reading_the_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_export(tmp_path / "e.csv", [bucket_row(input_tokens=100, output_tokens=10)])
    stage = staged_by_the_preflight(path, monkeypatch)
    try:
        result = reconcile(
            [path], db_side([db_row()]), first_day=D7, last_day=D7, open_from=D8, now=NOW,
            stage=stage,
        )  # fmt: skip
    finally:
        stage.close()
    assert judge(result).passed and result.counts["exportRows"] == 1


def test_a_file_changed_after_staging_is_read_again(tmp_path: Path) -> None:
    path = write_export(tmp_path / "e.csv", [bucket_row(input_tokens=100, output_tokens=10)])
    assert check_exports([path]) == []
    before = path.read_bytes()
    write_export(path, [bucket_row(input_tokens=100, output_tokens=10), bucket_row(user="u2")])
    assert path.read_bytes() != before
    stage = export_side.claim_stage()
    assert stage is not None and stage.staged(path) is None
    try:
        result = reconcile(
            [path], db_side([db_row()]), first_day=D7, last_day=D7, open_from=D8, now=NOW,
            stage=stage,
        )  # fmt: skip
    finally:
        stage.close()
    assert result.counts["exportRows"] == 2 and result.counts["missingInDb"] == 1


def test_one_typed_pass_names_no_row_of_a_clean_file(tmp_path: Path) -> None:
    """A clean file is staged by the typed reader alone: the exact reader never runs."""
    path = many_rows(tmp_path / "e.csv", 50)
    con = duckdb.connect()
    staged = staging.stage_file(con, path, "rows")
    assert staged.fast and staged.table == "rows" and staged.problem_count == 0
    tables = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert tables == {"rows"}  # no exact-reader groups were made


def test_repeated_key_days_are_grouped_and_the_rest_pass_through(tmp_path: Path) -> None:
    rows = [bucket_row(user=f"user_{i}", input_tokens=i + 1) for i in range(4)]
    rows.append(bucket_row(user="user_1", input_tokens=1000))  # user_1's key again, same day
    path = write_export(tmp_path / "e.csv", rows)  # type: ignore[arg-type]
    con = duckdb.connect()
    taken = staging.take(con, staging.stage_file(con, path, "rows"), D7, D7)
    assert taken.relation is not None
    got = con.execute(
        f"SELECT user_id, input_tokens, record_count FROM ({taken.relation}) ORDER BY user_id"
    ).fetchall()
    assert got == [("user_0", 1, 1), ("user_1", 1002, 2), ("user_2", 3, 1), ("user_3", 4, 1)]


# -- as an operator meets it: exit 4, nothing sent ------------------------------------------------


def test_a_cut_export_stops_the_run_before_the_cron_is_triggered(
    tmp_path: Path, counting_cron: tuple[str, list[str]]
) -> None:
    url, hits = counting_cron
    whole = many_rows(tmp_path / "whole.csv", 20)
    cut = tmp_path / "cut.csv"
    cut.write_bytes(whole.read_bytes()[:-40])
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(many_rows(tmp_path / "e.csv").read_bytes()))
    packed.write_bytes(packed.read_bytes()[: len(packed.read_bytes()) * 6 // 10])
    audit = tmp_path / "audit"
    env = guarded_env(
        clean_env(
            CRON_URL=url,
            CRON_SECRET="a-long-random-secret-0123",
            OPENAI_EXPORT=f"{cut}:{packed}",
            DB_CONNECT_TIMEOUT="2",
        ),
        tmp_path / "netguard.jsonl",
    )
    result = run_acceptance(f"--audit-dir={audit}", env=env, timeout=120)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    lines = result.stderr.splitlines()
    assert f"  - export file {cut}: ends mid-row at line 21: {CUT}" in lines
    assert f"  - export file {packed}: gzip stream ends early: {CUT}" in lines
    assert (
        "Nothing was triggered. Fix every problem above, or unset CRON_URL to run on the local stack."
        in lines
    )
    assert hits == []
    assert recorded_files(audit) == []


def test_the_typed_pass_trims_key_cells_as_the_reference_reader_does(tmp_path: Path) -> None:
    from cron_dryrun.parity.readers import rollup_daily

    # DuckDB's trim (the exact reader's) also strips NBSP and U+3000: so does the typed pass
    row = bucket_row(project=" proj_a", key="key_a\u00a0", user="\u3000user_a  ", model="gpt-4o")
    # a cell with a non-ASCII character inside is trimmed by trim(), which changes nothing
    kept = bucket_row(project="proj_é", key="key_a", user="user_b")
    path = write_export(tmp_path / "e.csv", [row, kept])
    assert b" proj_a," in path.read_bytes()
    con = duckdb.connect()
    staged = staging.stage_file(con, path, "rows")
    taken = staging.take(con, staged, D7, D7)
    assert staged.fast and taken.relation is not None
    got = sorted(
        con.execute(f"SELECT project_id, api_key_id, user_id FROM ({taken.relation})").fetchall()
    )
    assert got == [("proj_a", "key_a", "user_a"), ("proj_é", "key_a", "user_b")]
    assert {(k.project_id, k.api_key_id, k.user_id) for k in rollup_daily([path]).totals} == set(
        got
    )


def test_parity_names_a_cut_gzip_as_a_file_problem_without_a_preflight(tmp_path: Path) -> None:
    """``cron-dryrun diff`` has no preflight: the cut stream is a file problem in the report."""
    packed = tmp_path / "export.csv.gz"
    packed.write_bytes(gzip.compress(many_rows(tmp_path / "e.csv").read_bytes()))
    packed.write_bytes(packed.read_bytes()[: len(packed.read_bytes()) * 6 // 10])
    result = reconcile(
        [packed], db_side([db_row()]), first_day=D7, last_day=D7, open_from=D8, now=NOW
    )
    judgement = judge(result)
    assert not judgement.passed
    assert judgement.reasons[0] == f"export file {packed}: gzip stream ends early: {CUT}"
