"""Exports as operators have them: gzip, a wrong header, an empty file (issue 13, part 3).

The suite (reconcile + judge) and `cron-dryrun diff` say the same thing about each.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from cron_dryrun.parity.formats import expand_export_paths, sniff_export
from cron_dryrun.parity.pipeline import reconcile
from cron_dryrun.parity.readers import rollup_daily
from cron_dryrun.parity.rules import Judgement, judge
from tests.test_diff_command import diff, seed
from tests.test_exports import HEADER, bucket_row, write_export
from tests.test_reconcile import D7, D8, NOW, db_row, db_side

MISSING_USER_ID = (
    "header lacks column(s): user_id; is this the OpenAI completions usage export? (download it "
    "again from the usage dashboard: its header starts with "
    "start_time,end_time,start_time_iso,end_time_iso,project_id,...)"
)


def gzipped(path: Path, target: Path) -> Path:
    target.write_bytes(gzip.compress(path.read_bytes()))
    return target


def judged(tmp_path: Path, path: Path, db: list[list[object]]) -> Judgement:
    result = reconcile([path], db_side(db), first_day=D7, last_day=D7, open_from=D8, now=NOW)
    return judge(result)


@pytest.mark.parametrize("name", ["export.csv.gz", "saved-by-a-browser.csv"])
def test_a_gzip_export_is_read_directly(tmp_path: Path, name: str) -> None:
    plain = write_export(tmp_path / "plain.csv", [bucket_row(input_tokens=123)])
    packed = gzipped(plain, tmp_path / name)
    assert sniff_export(packed).compression == "gzip"
    assert rollup_daily([packed]).totals == rollup_daily([plain]).totals
    assert judged(tmp_path, packed, [db_row(input_tokens=123)]).passed
    assert not judged(tmp_path, packed, [db_row(input_tokens=999)]).passed


def test_a_gzip_tsv_and_json_pages_are_read_too(tmp_path: Path) -> None:
    tsv = write_export(tmp_path / "e.tsv", [bucket_row()], sep="\t")
    packed = gzipped(tsv, tmp_path / "e.tsv.gz")
    assert sniff_export(packed).kind == "tsv"
    assert judged(tmp_path, packed, [db_row()]).passed


def test_a_folder_offers_its_gzip_exports(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    plain = write_export(tmp_path / "x" / "a.csv", [bucket_row()])
    gzipped(plain, tmp_path / "x" / "b.csv.gz")
    (tmp_path / "x" / "notes.gz").write_bytes(b"")
    assert [p.name for p in expand_export_paths([tmp_path / "x"])] == ["a.csv", "b.csv.gz"]


def test_a_broken_gzip_is_a_file_problem_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(gzip.compress(b"start_time,end_time\n" * 50)[:30])
    reason = judged(tmp_path, path, []).reasons[0]
    assert reason.startswith(f"export file {path}: not a readable gzip file (")
    assert reason.endswith("): download the export again")


def test_a_wrong_header_names_the_missing_columns(tmp_path: Path) -> None:
    header = [c for c in HEADER if c != "user_id"]
    path = write_export(tmp_path / "e.csv", [bucket_row()], header)
    assert judged(tmp_path, path, [db_row()]).reasons[0] == (
        f"export file {path}: {MISSING_USER_ID}"
    )


def test_an_empty_file_says_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert judged(tmp_path, path, []).reasons[0] == (
        f"export file {path}: empty file: download the export again"
    )
    assert "bad export row" not in " ".join(judged(tmp_path, path, []).reasons)


def test_an_empty_file_beside_a_good_one_does_not_hide_metrics(tmp_path: Path) -> None:
    good = write_export(tmp_path / "good.csv", [bucket_row(input_tokens=5)])
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    result = reconcile(
        [good, empty], db_side([db_row(input_tokens=999)]), first_day=D7, last_day=D7,
        open_from=D8, now=NOW,
    )  # fmt: skip
    assert "input_tokens" in result.metrics_compared
    assert judge(result).reasons[0] == f"export file {empty}: empty file: download the export again"


# -- the same words from `cron-dryrun diff` ---------------------------------------------------------


def test_diff_reads_a_gzip_export(
    app_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(app_database, [{}])
    plain = write_export(tmp_path / "plain.csv", [bucket_row()])
    packed = gzipped(plain, tmp_path / "export.csv.gz")
    code = diff(tmp_path, "--export", str(packed), "--database-url", app_database,
                "--from", "2025-10-07", "--to", "2025-10-07")  # fmt: skip
    assert code == 0, capsys.readouterr()


def test_diff_on_a_wrong_header_says_what_the_suite_says(
    app_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header = [c for c in HEADER if c != "user_id"]
    path = write_export(tmp_path / "e.csv", [bucket_row()], header)
    assert diff(tmp_path, "--export", str(path), "--database-url", app_database) == 2
    err = capsys.readouterr().err
    assert f"export file {path}: {MISSING_USER_ID}" in err
    assert judged(tmp_path, path, []).reasons[0] in err


def test_diff_on_a_gzip_file_that_is_not_text_names_the_file(
    app_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(gzip.compress(b"\xff\xfe\x00garbage"))
    assert diff(tmp_path, "--export", str(path), "--database-url", app_database) == 2
    err = capsys.readouterr().err
    assert f"export file {path}: not UTF-8 text" in err
    assert "Traceback" not in err


def test_diff_on_an_empty_file_says_empty_file(
    app_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert diff(tmp_path, "--export", str(path), "--database-url", app_database) == 2
    assert f"export file {path}: empty file: download the export again" in capsys.readouterr().err
