"""Each stand-in fault does what issue 6's table says, and only to the key it must.

Faults that must fail parity act on the admin key (the only rows parity can judge);
window-wide and stale-update touch a standard key only.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from cron_dryrun.standin import LocalStack, start_local_stack
from cron_dryrun.standin.faults import FAULTS
from cron_dryrun.standin.usage_truth import DATED_MODEL

TIMEOUT = httpx.Timeout(15.0, connect=3.0)
_HTTP = httpx.Client(timeout=TIMEOUT)  # one client per module: building one costs ~40 ms


@pytest.fixture(scope="module", autouse=True)
def _close_http_client() -> Iterator[None]:
    yield
    _HTTP.close()


NOW = datetime(2025, 10, 8, 2, 0, tzinfo=UTC)
TODAY = datetime(2025, 10, 8)  # naive UTC, as the columns hold it
YESTERDAY = TODAY - timedelta(days=1)
SECRET = "fault-matrix-secret"


def _trigger(
    stack: LocalStack, method: str = "POST", authorization: str | None = f"Bearer {SECRET}"
) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return _HTTP.request(method, stack.cron_url, headers=headers, timeout=TIMEOUT)


def _rows(dsn: str, where: str = "TRUE", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with (
        psycopg.connect(dsn, connect_timeout=10) as conn,
        conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
    ):
        cur.execute(
            "SELECT e.*, e.xmin::text AS xid, k.usage_mode FROM usage_events e"
            f" JOIN provider_keys k ON k.id = e.key_id WHERE {where} ORDER BY e.id",
            params,
        )
        return list(cur.fetchall())


def _run_rows(dsn: str, mode: str | None = None) -> list[dict[str, Any]]:
    """Rows in or near the run's windows (history is 3-7 days old)."""
    rows = _rows(dsn, "e.window_start >= %s", (TODAY - timedelta(days=2),))
    return [r for r in rows if mode is None or r["usage_mode"] == mode]


def _export_output_tokens(stack: LocalStack) -> dict[tuple[Any, ...], int]:
    """Yesterday's and today's admin output tokens per key, as the exports give them."""
    tokens: dict[tuple[Any, ...], int] = {}
    for path in stack.export_paths:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if row["model"]:
                    key = (
                        row["start_time_iso"][:10],
                        row["project_id"],
                        row["user_id"],
                        row["api_key_id"],
                        row["model"],
                        row["service_tier"],
                        row["batch"] == "TRUE",
                    )
                    tokens[key] = int(float(row["output_tokens"]))
    return tokens


def _db_output_tokens(dsn: str) -> dict[tuple[Any, ...], int]:
    return {
        (
            r["window_start"].date().isoformat(),
            r["project_id"],
            r["openai_user_id"],
            r["openai_api_key_id"],
            r["model"],
            r["service_tier"],
            r["batch"],
        ): r["tokens_out"]
        for r in _run_rows(dsn, "admin")
    }


@pytest.fixture
def stack_for(app_database: str, request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    fault = request.param
    with start_local_stack(
        app_database, secret=SECRET, fault=fault, clock=lambda: NOW, slow_delay_s=3.0
    ) as stack:
        yield stack


def _with(fault: str) -> Any:
    return pytest.mark.parametrize("stack_for", [fault], indirect=True)


# -- auth -----------------------------------------------------------------------------------------


@_with("auth-open")
def test_auth_open_accepts_any_bearer_token(stack_for: LocalStack) -> None:
    assert _trigger(stack_for, authorization="Bearer wrong").status_code == 200
    assert _trigger(stack_for, authorization=None).status_code == 401


@_with("auth-no-header")
def test_auth_no_header_accepts_a_missing_header(stack_for: LocalStack) -> None:
    assert _trigger(stack_for, authorization=None).status_code == 200
    assert _trigger(stack_for, authorization="Bearer wrong").status_code == 401


@_with("auth-401-writes")
def test_auth_401_writes_ingests_before_refusing(stack_for: LocalStack) -> None:
    response = _trigger(stack_for, authorization="Bearer wrong")
    assert response.status_code == 401 and response.json() == {"error": "Unauthorized"}
    assert _run_rows(stack_for.database_dsn), "the refused request wrote rows"


@_with("no-post")
def test_no_post_answers_405_to_post_only(stack_for: LocalStack) -> None:
    post = _trigger(stack_for, "POST")
    assert post.status_code == 405 and post.content == b"" and "allow" not in post.headers
    assert not _run_rows(stack_for.database_dsn)
    assert _trigger(stack_for, "GET").status_code == 200
    assert (
        _HTTP.options(stack_for.cron_url, timeout=TIMEOUT).headers["allow"] == "GET, HEAD, OPTIONS"
    )


# -- the flag and the body ------------------------------------------------------------------------


@_with("flag-off")
def test_flag_off_reports_false_and_writes_unaligned_windows(stack_for: LocalStack) -> None:
    body = _trigger(stack_for).json()
    assert body["flags"] == {"enableDailyUsageWindows": False}
    assert body["telemetry"]["windowsProcessed"] == 4
    windows = {(r["window_start"], r["window_end"]) for r in _run_rows(stack_for.database_dsn)}
    assert windows == {(datetime(2025, 10, 7, 2), datetime(2025, 10, 8, 2))}


@_with("flag-missing")
def test_flag_missing_omits_flags(stack_for: LocalStack) -> None:
    body = _trigger(stack_for).json()
    assert "flags" not in body and body["telemetry"]["windowsProcessed"] == 8


@_with("flag-string")
def test_flag_string_reports_a_string(stack_for: LocalStack) -> None:
    assert _trigger(stack_for).json()["flags"] == {"enableDailyUsageWindows": "true"}


@_with("simulated-count")
def test_simulated_count_adds_the_runbook_field(stack_for: LocalStack) -> None:
    telemetry = _trigger(stack_for).json()["telemetry"]
    assert telemetry["simulatedKeyCount"] == 2 and telemetry["simulatedKeys"] == 0


# -- admin key: parity must see these -------------------------------------------------------------


@_with("window-shift")
def test_window_shift_moves_one_admin_row_a_day_earlier(stack_for: LocalStack) -> None:
    _trigger(stack_for)
    rows = _run_rows(stack_for.database_dsn)
    early = [r for r in rows if r["window_start"] == YESTERDAY - timedelta(days=1)]
    assert len(early) == 1 and early[0]["usage_mode"] == "admin"
    assert early[0]["window_end"] - early[0]["window_start"] == timedelta(days=1)


@_with("simulated")
def test_simulated_invents_usage_for_the_admin_key(stack_for: LocalStack) -> None:
    body = _trigger(stack_for).json()
    telemetry = body["telemetry"]
    assert body["success"] is True and body["errors"] == 0
    assert telemetry["simulatedKeys"] == 1 and telemetry["issuesByCode"] == {"SCOPE_MISSING": 2}
    admin = _run_rows(stack_for.database_dsn, "admin")
    assert len(admin) == 2 and all(r["project_id"] is None for r in admin)
    assert _run_rows(stack_for.database_dsn, "standard")


@pytest.mark.parametrize(
    ("stack_for", "low", "high"),
    [("token-drift", 1.02, 1.06), ("small-drift", 1.0, 1.01)],
    indirect=["stack_for"],
)
def test_drift_changes_admin_output_tokens_only(
    stack_for: LocalStack, low: float, high: float
) -> None:
    _trigger(stack_for)
    exported, stored = _export_output_tokens(stack_for), _db_output_tokens(stack_for.database_dsn)
    assert exported.keys() == stored.keys()
    for key, tokens in exported.items():
        assert low < stored[key] / tokens <= high or (low == 1.0 and stored[key] == tokens), key
    assert low < sum(stored.values()) / sum(exported.values()) <= high


def test_healthy_run_matches_the_export_exactly(app_database: str) -> None:
    with start_local_stack(app_database, secret=SECRET, clock=lambda: NOW) as stack:
        _trigger(stack)
        assert _db_output_tokens(app_database) == _export_output_tokens(stack)


@_with("drop-window")
def test_drop_window_skips_yesterday_for_the_admin_key(stack_for: LocalStack) -> None:
    assert _trigger(stack_for).json()["telemetry"]["windowsProcessed"] == 7
    admin_days = {r["window_start"] for r in _run_rows(stack_for.database_dsn, "admin")}
    assert admin_days == {TODAY}
    assert {r["window_start"] for r in _run_rows(stack_for.database_dsn, "standard")} == {
        YESTERDAY,
        TODAY,
    }


@_with("provider-error")
def test_provider_error_fails_the_admin_key_but_answers_200(stack_for: LocalStack) -> None:
    response = _trigger(stack_for)
    body = response.json()
    assert response.status_code == 200 and body["success"] is True and body["errors"] == 0
    telemetry = body["telemetry"]
    assert telemetry["failedKeys"] == 1
    assert telemetry["issuesByCode"] == {"PROVIDER_ERROR": 1, "UNKNOWN": 1}
    assert body["warningCount"] == 2  # each failed key counts twice
    assert not _run_rows(stack_for.database_dsn, "admin")
    assert telemetry["storedEvents"] == len(_run_rows(stack_for.database_dsn, "standard")) > 0


@_with("pricing-fallback")
def test_pricing_fallback_reports_a_dated_model(stack_for: LocalStack) -> None:
    body = _trigger(stack_for).json()
    assert (
        body["telemetry"]["issuesByCode"] == {"PRICING_FALLBACK": 1} and body["warningCount"] == 1
    )
    assert DATED_MODEL in {r["model"] for r in _run_rows(stack_for.database_dsn, "admin")}
    assert any(DATED_MODEL in p.read_text() for p in stack_for.export_paths), "the export agrees"


@_with("all-keys-fail")
def test_all_keys_fail_still_answers_200_success(stack_for: LocalStack) -> None:
    body = _trigger(stack_for).json()
    t = body["telemetry"]
    assert body["success"] is True and body["errors"] == 0
    assert t["failedKeys"] == t["processedKeys"] == 4 and t["windowsProcessed"] == 0
    assert not _run_rows(stack_for.database_dsn)


@_with("renamed-model")
def test_renamed_model_stores_dots_as_dashes_for_the_admin_key(stack_for: LocalStack) -> None:
    assert _trigger(stack_for).status_code == 200
    admin = {r["model"] for r in _run_rows(stack_for.database_dsn, "admin")}
    assert admin and not any("." in m for m in admin)
    assert any("-1-" in m or m.startswith("gpt-4-1") for m in admin), admin
    assert any("gpt-4.1" in p.read_text() for p in stack_for.export_paths), "the export keeps dots"


@_with("null-breakdown")
def test_null_breakdown_leaves_the_admin_breakdown_columns_null(stack_for: LocalStack) -> None:
    assert _trigger(stack_for).status_code == 200
    admin = _run_rows(stack_for.database_dsn, "admin")
    assert admin
    for row in admin:
        assert row["input_text_tokens"] is None and row["input_uncached_tokens"] is None
        assert row["output_text_tokens"] is None and row["input_cached_text_tokens"] is None
        assert row["tokens_in"] > 0 and row["num_model_requests"] > 0
    standard = _run_rows(stack_for.database_dsn, "standard")
    assert any(r["input_text_tokens"] is not None for r in standard)


# -- standard key: parity cannot see these --------------------------------------------------------


@_with("window-wide")
def test_window_wide_writes_one_two_day_standard_row(stack_for: LocalStack) -> None:
    body = _trigger(stack_for).json()
    wide = [
        r
        for r in _run_rows(stack_for.database_dsn)
        if r["window_end"] - r["window_start"] != timedelta(days=1)
    ]
    assert len(wide) == 1 and wide[0]["usage_mode"] == "standard"
    assert wide[0]["window_end"] - wide[0]["window_start"] == timedelta(days=2)
    assert body["telemetry"]["windowsProcessed"] == 8


@_with("stale-update")
def test_stale_update_rewrites_a_five_day_old_standard_row(stack_for: LocalStack) -> None:
    old = TODAY - timedelta(days=5)
    before = {
        r["id"]: r
        for r in _rows(stack_for.database_dsn, "e.window_start < %s", (TODAY - timedelta(days=2),))
    }
    body = _trigger(stack_for).json()
    after = {
        r["id"]: r
        for r in _rows(stack_for.database_dsn, "e.window_start < %s", (TODAY - timedelta(days=2),))
    }
    changed = [i for i in before if before[i]["xid"] != after[i]["xid"]]
    assert len(changed) == 1
    row = after[changed[0]]
    assert row["window_start"] == old and row["usage_mode"] == "standard"
    assert {k: v for k, v in row.items() if k != "xid"} == {
        k: v for k, v in before[changed[0]].items() if k != "xid"
    }
    assert body["telemetry"]["updatedEvents"] == 1


# -- database -------------------------------------------------------------------------------------


@_with("duplicate-rerun")
def test_duplicate_rerun_duplicates_rows(stack_for: LocalStack) -> None:
    with psycopg.connect(stack_for.database_dsn, connect_timeout=10) as conn:
        assert conn.execute("SELECT to_regclass('usage_admin_bucket_idx')").fetchone() == (None,)
    first = _trigger(stack_for).json()["telemetry"]
    count = len(_run_rows(stack_for.database_dsn))
    second = _trigger(stack_for).json()["telemetry"]
    assert first["storedEvents"] == second["storedEvents"] == count > 0
    assert second["updatedEvents"] == 0
    assert len(_run_rows(stack_for.database_dsn)) == 2 * count


# -- transport ------------------------------------------------------------------------------------


@_with("html-500")
def test_html_500(stack_for: LocalStack) -> None:
    response = _trigger(stack_for)
    assert response.status_code == 500 and response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")
    assert _trigger(stack_for, authorization="Bearer wrong").status_code == 401


def test_slow_answers_after_the_delay_and_does_not_block_shutdown(app_database: str) -> None:
    with start_local_stack(
        app_database, secret=SECRET, fault="slow", clock=lambda: NOW, slow_delay_s=30.0
    ) as stack:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            _HTTP.post(
                stack.cron_url,
                headers={"Authorization": f"Bearer {SECRET}"},
                timeout=httpx.Timeout(0.5, connect=3.0),
            )
        assert time.monotonic() - started < 5
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 5, "a pending slow answer held up shutdown"
    assert not _run_rows(app_database)
    with start_local_stack(
        app_database, secret=SECRET, fault="slow", clock=lambda: NOW, slow_delay_s=0.3
    ) as stack:
        assert _trigger(stack).status_code == 200


@_with("throttle")
def test_throttle_answers_429_once_then_behaves(stack_for: LocalStack) -> None:
    assert (
        _trigger(stack_for, authorization="Bearer wrong").status_code == 401
    )  # refusals do not use it up
    first = _trigger(stack_for)
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert not _run_rows(stack_for.database_dsn)
    assert _trigger(stack_for).status_code == 200


# -- the telemetry's counters (issue 27) -----------------------------------------------------------


def _pairs(rows: list[dict[str, Any]]) -> set[tuple[int, datetime]]:
    return {(r["key_id"], r["window_start"]) for r in rows}


@pytest.mark.parametrize(
    "stack_for",
    ["none", "manual-fallback", "provider-error", "all-keys-fail", "simulated", "pricing-fallback"],
    indirect=True,
)
def test_honest_faults_keep_the_apps_arithmetic(stack_for: LocalStack) -> None:
    from cron_dryrun.rules.telemetry import judge_counters_agree, read_counters

    for _ in range(2):  # the first run inserts, the rerun updates
        assert judge_counters_agree(read_counters(_trigger(stack_for).json())) == []


@_with("manual-fallback")
def test_manual_fallback_reports_its_writes_under_the_fallback(stack_for: LocalStack) -> None:
    first = _trigger(stack_for).json()["telemetry"]
    rows = _run_rows(stack_for.database_dsn)
    assert first["storedEvents"] == first["manualFallbackInserts"] == len(rows) > 0
    assert first["constraintInserts"] == first["constraintUpdates"] == 0
    assert first["manualFallbackWindows"] == len(_pairs(rows)) == 8
    assert first["manualFallbackKeys"] == 4
    second = _trigger(stack_for).json()["telemetry"]
    assert second["updatedEvents"] == second["manualFallbackUpdates"] == len(rows)
    assert second["manualFallbackInserts"] == 0 and second["manualFallbackWindows"] == 8


@_with("stored-updated-swapped")
def test_stored_updated_swapped_reports_its_inserts_as_updates(stack_for: LocalStack) -> None:
    t = _trigger(stack_for).json()["telemetry"]
    inserted = _run_rows(stack_for.database_dsn)  # the run's windows held no row before it
    assert t["storedEvents"] == t["constraintInserts"] == 0
    assert t["updatedEvents"] == t["constraintUpdates"] == len(inserted) > 0


@_with("warning-count-off")
def test_warning_count_off_reports_one_warning_too_many(stack_for: LocalStack) -> None:
    body = _trigger(stack_for).json()
    assert body["telemetry"]["issuesByCode"] == {} and body["warningCount"] == 1


@_with("fallback-keys-zero")
def test_fallback_keys_zero_hides_the_keys_behind_the_fallback_writes(
    stack_for: LocalStack,
) -> None:
    t = _trigger(stack_for).json()["telemetry"]
    rows = _run_rows(stack_for.database_dsn)
    assert t["manualFallbackInserts"] == len(rows) > 0
    assert t["manualFallbackWindows"] == len(_pairs(rows)) and t["manualFallbackKeys"] == 0


@_with("fallback-windows-off")
def test_fallback_windows_off_reports_two_windows_it_did_not_write(stack_for: LocalStack) -> None:
    t = _trigger(stack_for).json()["telemetry"]
    rows = _run_rows(stack_for.database_dsn)
    assert t["manualFallbackWindows"] == len(_pairs(rows)) + 2 <= t["manualFallbackInserts"]


@_with("processed-users-off")
def test_processed_users_off_reports_one_user_too_many(stack_for: LocalStack) -> None:
    body = _trigger(stack_for).json()
    assert body["telemetry"]["processedUsers"] == body["processed"] + 1 == 4


@_with("write-modes-off")
def test_write_modes_off_reports_one_constraint_insert_too_many(stack_for: LocalStack) -> None:
    t = _trigger(stack_for).json()["telemetry"]
    assert t["constraintInserts"] == t["storedEvents"] + 1 and t["manualFallbackInserts"] == 0


@_with("negative-count")
def test_negative_count_reports_constraint_updates_below_zero(stack_for: LocalStack) -> None:
    assert _trigger(stack_for).json()["telemetry"]["constraintUpdates"] == -1


def test_every_fault_has_a_test_here() -> None:
    import inspect
    import sys

    source = inspect.getsource(sys.modules[__name__])
    missing = [name for name in FAULTS if name != "none" and f'"{name}"' not in source]
    assert not missing
