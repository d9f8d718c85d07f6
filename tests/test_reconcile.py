"""The parity policy: pure rule, exact failure message, and the DuckDB comparison on crafted sides.

The database side is a crafted daily-totals CSV here (what usage_totals writes);
tests/test_diff_command.py covers the real PostgreSQL query.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import jsonschema
import pytest

from cron_dryrun.parity import compare
from cron_dryrun.parity.db_side import UnrecordedProbe
from cron_dryrun.parity.formats import METRICS
from cron_dryrun.parity.pipeline import reconcile
from cron_dryrun.parity.report import detail_path_for, report_dict, report_path, write_report
from cron_dryrun.parity.rules import (
    DiffResult,
    Finding,
    Judgement,
    Policy,
    failure_message,
    judge,
    metric_findings,
    relative_delta,
    sql_fails,
    summary_line,
)
from tests.test_exports import bucket_row, empty_row, write_export

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "schemas" / "diff-report.schema.json").read_text()
)
D6, D7, D8 = date(2025, 10, 6), date(2025, 10, 7), date(2025, 10, 8)
NOW = datetime(2025, 10, 8, 2, 0, 5, tzinfo=UTC)


def midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def db_row(
    day: date = D7,
    *,
    project: str = "proj_a",
    key: str = "key_a",
    user: str = "user_a",
    model: str = "gpt-4o",
    tier: str = "default",
    batch: bool = False,
    aligned: bool = True,
    records: int = 1,
    **metrics: int,
) -> list[object]:
    values = {"input_tokens": 100, "output_tokens": 10, "num_model_requests": 1, **metrics}
    return [
        day.isoformat(), project, key, user, model, tier, int(batch), int(aligned), records,
        *(values.get(m, 0) for m in METRICS),
    ]  # fmt: skip


def db_side(rows: list[list[object]]) -> Callable[[date, date, Path], None]:
    """A DbTotalsWriter over crafted rows, filtered to the asked range like the real query."""

    def write(first: date, last: date, out: Path) -> None:
        with open(out, "w", newline="") as fh:
            writer = csv.writer(fh)
            for row in rows:
                if first.isoformat() <= str(row[0]) <= last.isoformat():
                    writer.writerow(row)

    return write


def run(
    tmp_path: Path,
    export_rows: list[dict[str, str] | str],
    db_rows: list[list[object]],
    *,
    first: date | None = D7,
    last: date | None = D7,
    open_from: date | None = D8,
    policy: Policy | None = None,
) -> DiffResult:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_export(tmp_path / "export.csv", export_rows)
    return reconcile(
        [path],
        db_side(db_rows),
        first_day=first,
        last_day=last,
        open_from=open_from,
        policy=policy,
        detail_path=tmp_path / "detail.jsonl.gz",
        now=NOW,
    )


def two_keys(out_a: int, out_b: int) -> tuple[list[dict[str, str] | str], list[list[object]]]:
    export: list[dict[str, str] | str] = [
        bucket_row(user="user_a", output_tokens=100_000),
        bucket_row(user="user_b", output_tokens=100_000),
    ]
    db = [db_row(user="user_a", output_tokens=out_a), db_row(user="user_b", output_tokens=out_b)]
    return export, db


# -- the pure rule -------------------------------------------------------------------------------


def test_relative_delta_is_against_the_export() -> None:
    assert relative_delta(100_000, 105_000) == pytest.approx(0.05)
    assert relative_delta(100_000, 95_000) == pytest.approx(-0.05)
    assert relative_delta(0, 3) == 3.0  # zero in the export still fails a non-zero DB


def test_metric_findings_threshold_and_exact_requests() -> None:
    metrics = ("input_tokens", "output_tokens", "num_model_requests")
    export = {"input_tokens": 1000, "output_tokens": 1000, "num_model_requests": 10}
    assert metric_findings(export, {**export, "input_tokens": 1010}, metrics, 0.02) == []
    assert metric_findings(export, {**export, "input_tokens": 1020}, metrics, 0.02) == []
    assert metric_findings(export, {**export, "output_tokens": 1021}, metrics, 0.02) == [
        Finding("output_tokens", 1000, 1021)
    ]
    assert metric_findings(export, {**export, "num_model_requests": 11}, metrics, 0.02) == [
        Finding("num_model_requests", 10, 11)
    ]


def test_sql_rule_agrees_with_the_pure_rule() -> None:
    con = duckdb.connect()
    pairs = [
        (e, d)
        for e in (0, 1, 50, 100, 1000, 123_457)
        for d in (0, 1, 49, 51, 98, 102, 103, 1020, 1021, 125_926)
    ]
    for metric in ("output_tokens", "num_model_requests"):
        rule = sql_fails(metric, 0.02)
        for e, d in pairs:
            (sql_says,) = con.execute(
                f'SELECT {rule} FROM (SELECT {e}::BIGINT AS "e_{metric}", {d}::BIGINT AS "d_{metric}")'
            ).fetchone()
            py_says = bool(metric_findings({metric: e}, {metric: d}, (metric,), 0.02))
            assert sql_says == py_says, (metric, e, d)


# -- policy on crafted sides ---------------------------------------------------------------------


def test_two_keys_drifting_plus_and_minus_five_percent_both_fail(tmp_path: Path) -> None:
    export, db = two_keys(105_000, 95_000)
    result = run(tmp_path, export, db)
    assert result.counts["mismatched"] == 2
    assert result.total_findings == []  # totals equal: only the per-key-day rule catches it
    assert result.totals("export")["output_tokens"] == result.totals("db")["output_tokens"]
    assert judge(result).verdict == "fail"


@pytest.mark.parametrize("twin_filter_from", [0, 10**9], ids=["hashed twins", "plain join"])
def test_differences_among_many_exact_twins_are_all_found_even_when_they_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, twin_filter_from: int
) -> None:
    # the join runs only on key-days without an exact twin on the other side (one hash of
    # key and compared metrics), from TWIN_FILTER_MIN_KEY_DAYS on: both ways, among 300
    # twins, two requests moved between two users (the day's totals are equal), and one
    # user off by a single token
    monkeypatch.setattr(compare, "TWIN_FILTER_MIN_KEY_DAYS", twin_filter_from)
    users = [f"user_{i:03d}" for i in range(300)]
    export = [
        bucket_row(user=u, num_model_requests=5, output_tokens=1000 + i)
        for i, u in enumerate(users)
    ]
    db = [db_row(user=u, num_model_requests=5, output_tokens=1000 + i) for i, u in enumerate(users)]
    db[17] = db_row(user=users[17], num_model_requests=6, output_tokens=1017)
    db[230] = db_row(user=users[230], num_model_requests=4, output_tokens=1230)
    db[99] = db_row(user=users[99], num_model_requests=5, output_tokens=1100)  # 1099 + 1
    result = run(tmp_path, export, db, policy=Policy(threshold=0.0005))
    assert (
        result.totals("export")["num_model_requests"] == result.totals("db")["num_model_requests"]
    )
    assert result.counts["mismatched"] == 3
    assert result.counts["matched"] == 297
    assert result.counts["dbKeyDays"] == result.counts["exportKeyDays"] == 300
    assert sorted(o.key.user_id for o in result.offenders["mismatched"]) == [
        users[17],
        users[99],
        users[230],
    ]
    # within the threshold, the one-token difference is matched again (the rule decides,
    # not the prefilter)
    result = run(tmp_path / "b", export, db, policy=Policy(threshold=0.02))
    assert result.counts["mismatched"] == 2
    assert result.counts["matched"] == 298


def test_only_key_days_without_an_exact_twin_reach_the_join() -> None:
    """The sides' column types differ as the readers deliver them (int4 sums from the
    database, BIGINT from the export, a NULL where no row recorded a metric): twins are
    still twins, and only the two differing key-days are joined."""
    from cron_dryrun.parity.compare import _candidates

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE e_join AS SELECT DATE '2025-10-07' AS day, 'proj_a' AS project_id, "
        "'key_a' AS api_key_id, 'user_' || i AS user_id, 'gpt-4o' AS model, "
        "'default' AS service_tier, false AS batch, (100 + i)::BIGINT AS input_tokens, "
        "0::BIGINT AS output_tokens FROM range(50) t(i)"
    )
    con.execute(
        "CREATE TABLE d AS SELECT day, project_id, api_key_id, user_id, model, service_tier, "
        "batch, CAST(CASE WHEN user_id = 'user_7' THEN input_tokens + 1 ELSE input_tokens END "
        "AS INTEGER) AS input_tokens, CAST(NULL AS INTEGER) AS output_tokens FROM e_join "
        "WHERE user_id <> 'user_9'"
    )
    _candidates(con, ("input_tokens", "output_tokens"))
    e_users = sorted(u for (u,) in con.execute("SELECT user_id FROM e_cand").fetchall())
    d_users = sorted(u for (u,) in con.execute("SELECT user_id FROM d_cand").fetchall())
    assert e_users == ["user_7", "user_9"]
    assert d_users == ["user_7"]


def test_one_percent_drift_passes(tmp_path: Path) -> None:
    export, db = two_keys(101_000, 99_000)
    result = run(tmp_path, export, db)
    assert judge(result) == Judgement("pass", ())
    assert result.counts["matched"] == 2


def test_total_drift_beyond_threshold_fails_even_when_each_key_day_is_within(
    tmp_path: Path,
) -> None:
    export, db = two_keys(101_900, 101_900)
    result = run(tmp_path, export, db, policy=Policy(threshold=0.02))
    assert judge(result).passed  # 1.9 % each, 1.9 % in total
    result = run(tmp_path / "b", export, db, policy=Policy(threshold=0.015))
    assert result.counts["mismatched"] == 2
    assert [f.metric for f in result.total_findings] == ["output_tokens"]


def test_key_day_on_one_side_only_fails(tmp_path: Path) -> None:
    result = run(tmp_path, [bucket_row(user="user_a")], [db_row(user="user_b")])
    assert result.counts["missingInDb"] == 1
    assert result.counts["missingInCsv"] == 1
    assert judge(result).reasons[:2] == (
        "1 key-day(s) in the export but missing in the DB",
        "1 key-day(s) in the DB but missing in the export",
    )


def test_num_model_requests_is_exact(tmp_path: Path) -> None:
    result = run(tmp_path, [bucket_row(num_model_requests=1000)], [db_row(num_model_requests=1001)])
    assert result.counts["mismatched"] == 1
    assert result.offenders["mismatched"][0].findings == (
        Finding("num_model_requests", 1000, 1001),
    )


def test_open_day_and_partially_covered_day_are_reported_not_judged(tmp_path: Path) -> None:
    half = [bucket_row(midnight(D6) + timedelta(hours=h), timedelta(hours=1)) for h in range(12)]
    export = [*half, bucket_row(), bucket_row(midnight(D8), output_tokens=5)]
    db = [db_row(D6, output_tokens=999), db_row(), db_row(D8, output_tokens=1)]
    result = run(tmp_path, export, db, first=D6, last=D8, open_from=D8)
    days = {d.day: d for d in result.days}
    assert (
        days[D6].judged is False and days[D6].reason == "export covers 43200 of 86400 s of this day"
    )
    assert days[D8].judged is False
    assert days[D8].reason == "still open: the run's current day (from 2025-10-08)"
    assert result.judged_days == [D7]
    assert judge(result).passed
    assert result.counts["unjudgedKeyDays"] == 2
    assert days[D8].key_days["mismatched"] == 1  # reported all the same


def test_nothing_judged_is_inconclusive(tmp_path: Path) -> None:
    result = run(tmp_path, [bucket_row()], [db_row()], open_from=D7)
    judgement = judge(result)
    assert judgement.verdict == "inconclusive"
    assert judgement.reasons == (
        "no day could be judged (2025-10-07: still open: the run's current day (from 2025-10-07))",
    )


def test_bad_rows_fail_by_default_and_never_change_a_total(tmp_path: Path) -> None:
    export = [bucket_row(input_tokens=100), bucket_row(input_tokens="1e")]
    result = run(tmp_path, export, [db_row(input_tokens=100)])
    assert result.totals("export")["input_tokens"] == 100
    assert result.counts["exportBadRows"] == 1
    assert judge(result).reasons == (
        f"1 bad export row(s) (first: {tmp_path / 'export.csv'}:3: "
        "input_tokens: not a whole non-negative number: '1e')",
    )
    tolerant = run(
        tmp_path / "t", export, [db_row(input_tokens=100)], policy=Policy(bad_rows_fail=False)
    )
    assert judge(tolerant).passed
    assert tolerant.counts["exportBadRows"] == 1


def test_rows_without_ids_and_unaligned_rows_are_counted(tmp_path: Path) -> None:
    export = [bucket_row(), bucket_row(project="", key="", user="", input_tokens=40), empty_row()]
    db = [
        db_row(),
        db_row(project="", key="", user="", input_tokens=30, records=3),
        db_row(user="user_z", aligned=False, records=2),
    ]
    result = run(tmp_path, export, db)
    c = result.counts
    assert (c["exportRowsWithoutIds"], c["exportEmptyBucketRows"]) == (1, 1)
    assert (c["dbRowsWithoutIds"], c["dbUnalignedRows"], c["dbRows"]) == (3, 2, 6)
    assert result.without_ids["export"]["input_tokens"] == 40
    assert result.without_ids["db"]["input_tokens"] == 30
    assert judge(result).passed


def test_range_defaults_to_the_export_days(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        [bucket_row(midnight(D6)), bucket_row()],
        [db_row(D6), db_row()],
        first=None,
        last=None,
    )
    assert (result.first_day, result.last_day) == (D6, D7)
    assert result.judged_days == [D6, D7]


# -- the failure message (part of the API) -------------------------------------------------------


def test_failure_message_names_the_worst_offenders(tmp_path: Path) -> None:
    export: list[dict[str, str] | str] = [
        bucket_row(user="user_a", output_tokens=100_000),
        bucket_row(user="user_b", output_tokens=100_000),
        bucket_row(user="user_c", model="o3-mini", input_tokens=500, output_tokens=50),
        bucket_row(midnight(D8), user="user_a"),
    ]
    db = [
        db_row(user="user_a", output_tokens=105_000),
        db_row(user="user_b", output_tokens=92_000),
        db_row(D8, user="user_a", output_tokens=1),
    ]
    result = run(tmp_path, export, db, first=D7, last=D8, open_from=D8)
    report = tmp_path / "r.json"
    assert failure_message(result, report).splitlines() == [
        "parity check fail: 2 key-day(s) with metrics out of policy; "
        "1 key-day(s) in the export but missing in the DB; "
        "total input_tokens export 700 db 200: db is 71.43 % below the export (-500); "
        "total num_model_requests export 3 db 2: db is 33.33 % below the export (-1)",
        "worst offenders:",
        "  2025-10-07 project=proj_a key=key_a user=user_b model=gpt-4o tier=default batch=false: "
        "output_tokens export 100000 db 92000: db is 8.00 % below the export (-8000)",
        "  2025-10-07 project=proj_a key=key_a user=user_a model=gpt-4o tier=default batch=false: "
        "output_tokens export 100000 db 105000: db is 5.00 % above the export (+5000)",
        "  2025-10-07 project=proj_a key=key_a user=user_c model=o3-mini tier=default batch=false: "
        "missing in DB (export input_tokens 500, output_tokens 50)",
        "not judged: 2025-10-08 (still open: the run's current day (from 2025-10-08))",
        f"report: {report}",
    ]
    assert summary_line(result) == (
        "parity FAIL: judged 2025-10-07; 3 key-days, 2 mismatched, 1 missing in DB, "
        "0 missing in export, 0 bad export rows (threshold 2 %)"
    )


def test_failure_message_is_capped(tmp_path: Path) -> None:
    export = [bucket_row(user=f"user_{i}") for i in range(8)]
    result = run(tmp_path, export, [])
    lines = failure_message(result, limit=3).splitlines()
    assert lines[1] == "worst offenders:"
    assert len(lines) == 2 + 3 + 1
    assert lines[-1] == "  ... 5 more"


# -- the report ----------------------------------------------------------------------------------


def test_report_matches_schema_and_the_app_shape(tmp_path: Path) -> None:
    export, db = two_keys(105_000, 95_000)
    result = run(
        tmp_path, [*export, bucket_row(user="user_c"), bad_line()], [*db, db_row(user="user_d")]
    )
    path = report_path(tmp_path / "audit", NOW)
    data = write_report(result, path)
    jsonschema.validate(data, SCHEMA)
    assert json.loads(path.read_text()) == data
    for field in ("mismatched", "missingInDb", "missingInCsv", "totals", "inspectedCsvFiles"):
        assert field in data
    # worst first (a tie: by key), and the app's sign: csv - db
    assert data["mismatched"][0]["deltas"] == {"output_tokens": -5_000}
    assert data["missingInDb"][0]["userId"] == "user_c"
    assert data["missingInCsv"][0]["userId"] == "user_d"
    assert data["verdict"] == "fail"
    with gzip.open(tmp_path / "detail.jsonl.gz", "rt") as fh:
        kinds = sorted(json.loads(line)["kind"] for line in fh)
    assert kinds == ["badRow", "mismatched", "mismatched", "missingInCsv", "missingInDb"]
    assert data["detail"]["lines"] == 5


def bad_line() -> str:
    return ",".join(["x"] * 3)


def test_report_size_is_bounded(tmp_path: Path) -> None:
    export = [bucket_row(user=f"user_{i}") for i in range(30)]
    result = run(tmp_path, export, [], policy=Policy(sample_size=5))
    data = report_dict(result)
    assert len(data["missingInDb"]) == 5
    assert data["counts"]["missingInDb"] == 30
    assert data["detail"]["lines"] == 30


def test_report_path_is_stamped_and_never_reused(tmp_path: Path) -> None:
    first = report_path(tmp_path, NOW)
    assert first == tmp_path / "telemetry-audit" / "2025-10-08T02-00-05Z-cron-diff.json"
    first.parent.mkdir(parents=True)
    first.write_text("{}")
    assert report_path(tmp_path, NOW).name == "2025-10-08T02-00-05Z-cron-diff-2.json"
    assert detail_path_for(first).name == "2025-10-08T02-00-05Z-cron-diff.detail.jsonl.gz"


def test_policy_rejects_a_threshold_outside_0_1() -> None:
    with pytest.raises(ValueError, match="parity threshold must be in"):
        Policy(threshold=2)


# -- what the real app taught (issue 13) -----------------------------------------------------------


def test_a_five_percent_drift_says_which_way_it_goes() -> None:
    # the export 5 % over the DB: relative to the export the DB is 4.76 % below it
    assert Finding("output_tokens", 105_000, 100_000).describe() == (
        "output_tokens export 105000 db 100000: db is 4.76 % below the export (-5000)"
    )
    assert Finding("input_tokens", 0, 3).describe() == (
        "input_tokens export 0 db 3: db is 3 above the export (export 0)"
    )


def test_one_export_per_organisation_is_not_an_overlap(tmp_path: Path) -> None:
    a = write_export(tmp_path / "org-a.csv", [bucket_row(project="proj_a")])
    b = write_export(tmp_path / "org-b.csv", [bucket_row(project="proj_b")])
    result = reconcile(
        [a, b],
        db_side([db_row(project="proj_a"), db_row(project="proj_b")]),
        first_day=D7,
        last_day=D7,
        open_from=D8,
        now=NOW,
    )
    assert result.counts["exportBadRows"] == 0
    assert judge(result).passed


def test_two_copies_of_one_export_still_fail_as_an_overlap(tmp_path: Path) -> None:
    a = write_export(tmp_path / "a.csv", [bucket_row(), bucket_row(user="user_b")])
    b = write_export(tmp_path / "copy.csv", [bucket_row(), bucket_row(user="user_b")])
    result = reconcile(
        [a, b], db_side([db_row(), db_row(user="user_b")]), first_day=D7, last_day=D7,
        open_from=D8, now=NOW,
    )  # fmt: skip
    assert judge(result).reasons[0] == (
        f"export file {b} overlaps {a} at 2025-10-07T00:00:00Z on 2 "
        "key-day(s) (first: 2025-10-07 project=proj_a key=key_a user=user_a model=gpt-4o "
        "tier=default batch=false): the same usage would count twice"
    )


def test_a_model_renamed_by_ingestion_is_named_once_per_pair(tmp_path: Path) -> None:
    export = [
        bucket_row(model="gpt-4.1-mini-2025-04-14", input_tokens=700),
        bucket_row(model="gpt-4.1-mini-2025-04-14", user="user_b", input_tokens=900),
        bucket_row(model="gpt-4o"),
    ]
    db = [
        db_row(model="gpt-4-1-mini-2025-04-14", input_tokens=700),
        db_row(model="gpt-4-1-mini-2025-04-14", user="user_b", input_tokens=900),
        db_row(model="gpt-4o"),
    ]
    result = run(tmp_path, export, db)
    judgement = judge(result)
    assert judgement.verdict == "fail"  # the gate still fails: the DB does not say what OpenAI says
    assert judgement.reasons == (
        "model renamed by ingestion: gpt-4.1-mini-2025-04-14 → gpt-4-1-mini-2025-04-14 "
        "(2 key-days, totals equal)",
    )
    message = failure_message(result)
    assert "missing in DB" not in message and "missing in export" not in message
    data = report_dict(result)
    assert data["renamedModels"] == [
        {"exportModel": "gpt-4.1-mini-2025-04-14", "dbModel": "gpt-4-1-mini-2025-04-14",
         "keyDays": 2, "totalsEqual": True}
    ]  # fmt: skip
    assert len(data["missingInDb"]) == len(data["missingInCsv"]) == 2  # the facts stay listed
    jsonschema.validate(data, SCHEMA)


def test_a_renamed_model_whose_totals_differ_is_not_paired(tmp_path: Path) -> None:
    export = [bucket_row(model="gpt-4.1-mini", input_tokens=700)]
    db = [db_row(model="gpt-4-1-mini", input_tokens=300)]
    reasons = judge(run(tmp_path, export, db)).reasons
    assert reasons[:2] == (
        "1 key-day(s) in the export but missing in the DB",
        "1 key-day(s) in the DB but missing in the export",
    )


def unrecorded_probe(
    null_everywhere: dict[date, set[str]], asked: list[tuple[list[date], list[str]]]
) -> UnrecordedProbe:
    def probe(days: object, metrics: object) -> dict[date, frozenset[str]]:
        asked.append((list(days), list(metrics)))  # type: ignore[call-overload]
        return {d: frozenset(ms) for d, ms in null_everywhere.items()}

    return probe


BREAKDOWN = {"input_uncached_tokens": 90, "input_text_tokens": 100, "output_text_tokens": 10}


def test_metrics_null_in_every_db_row_are_a_warning_and_the_rest_is_judged(
    tmp_path: Path,
) -> None:
    export = [bucket_row(**BREAKDOWN), bucket_row(user="user_b", **BREAKDOWN)]
    db = [db_row(), db_row(user="user_b")]  # the breakdown columns NULL: summed to 0
    asked: list[tuple[list[date], list[str]]] = []
    path = write_export(tmp_path / "export.csv", export)
    result = reconcile(
        [path], db_side(db), first_day=D7, last_day=D7, open_from=D8, now=NOW,
        unrecorded_probe=unrecorded_probe({D7: set(BREAKDOWN)}, asked),
    )  # fmt: skip
    assert asked == [([D7], list(BREAKDOWN))]  # only where the DB has 0 and the export not
    judgement = judge(result)
    assert judgement.passed
    assert judgement.warnings == (
        "not recorded by ingestion: input_uncached_tokens, input_text_tokens, output_text_tokens "
        "NULL in every DB row of 2025-10-07 (the export has them): not judged; the other "
        "metrics were",
    )
    data = report_dict(result)
    assert data["notRecordedByIngestion"] == {"2025-10-07": list(BREAKDOWN)}
    assert data["warnings"] == list(judgement.warnings)
    jsonschema.validate(data, SCHEMA)


def test_unrecorded_metrics_do_not_hide_a_drift_in_the_recorded_ones(tmp_path: Path) -> None:
    export = [bucket_row(output_tokens=1000, **BREAKDOWN)]
    path = write_export(tmp_path / "export.csv", export)
    result = reconcile(
        [path], db_side([db_row(output_tokens=900)]), first_day=D7, last_day=D7, open_from=D8,
        now=NOW, unrecorded_probe=unrecorded_probe({D7: set(BREAKDOWN)}, []),
    )  # fmt: skip
    assert judge(result).verdict == "fail"
    assert [f.metric for f in result.offenders["mismatched"][0].findings] == ["output_tokens"]


def test_a_metric_recorded_in_some_rows_is_still_judged(tmp_path: Path) -> None:
    export = [bucket_row(**BREAKDOWN), bucket_row(user="user_b", **BREAKDOWN)]
    db = [db_row(**BREAKDOWN), db_row(user="user_b")]  # NULL in one row only: sum is not 0
    path = write_export(tmp_path / "export.csv", export)
    asked: list[tuple[list[date], list[str]]] = []
    result = reconcile(
        [path], db_side(db), first_day=D7, last_day=D7, open_from=D8, now=NOW,
        unrecorded_probe=unrecorded_probe({}, asked),
    )  # fmt: skip
    assert asked == []
    assert judge(result).verdict == "fail"
    assert result.counts["mismatched"] == 1


def test_missing_in_db_beside_unaligned_rows_points_at_the_flag(tmp_path: Path) -> None:
    export = [bucket_row(user=f"user_{i}") for i in range(3)]
    db = [db_row(user=f"user_{i}", aligned=False) for i in range(3)]
    reasons = judge(run(tmp_path, export, db)).reasons
    assert reasons[0] == (
        "3 key-day(s) in the export but missing in the DB; the DB holds 3 row(s) whose windows "
        "are not UTC days (the flag-off signature: the cron fetched [now-24h, now) instead of "
        "daily windows), so they cannot match; set ENABLE_DAILY_USAGE_WINDOWS=true in the "
        "staging environment and redeploy"
    )
