"""Each runbook check's judging rule, on crafted responses and rows, with its exact message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from cron_dryrun.exchange.record import DbObservation, ExchangeMissing, RecordedRun, UsageRow
from cron_dryrun.rules.checks import (
    AuthCase,
    auth_cases,
    exchange_problem,
    find_simulated,
    judge_auth_case,
    judge_exports_present,
    judge_flag,
    judge_no_simulated_keys,
    judge_rejections_wrote_nothing,
    judge_rerun,
    judge_success_body,
    judge_target_scheme,
    judge_telemetry,
    judge_window_columns,
    judge_window_scoping,
    padded_secret_case,
)
from cron_dryrun.target.client import Exchange, Transcript

RUN_AT = datetime(2025, 10, 8, 2, 0, 0, tzinfo=UTC)


def answer(
    status: int | None, body: bytes = b"", content_type: str = "application/json", **kw: Any
) -> Transcript:
    headers = (("content-type", content_type), *tuple(kw.pop("headers", ())))
    return Transcript(
        label="main",
        method=kw.pop("method", "POST"),
        url="http://127.0.0.1:1/api/cron/daily-usage",
        request_headers=(),
        request_body=b"",
        started_at=RUN_AT,
        status=status,
        reason=kw.pop("reason", "OK"),
        response_headers=headers,
        response_body=body,
        **kw,
    )


def good_body(**telemetry: Any) -> dict[str, Any]:
    t = {
        "processedUsers": 3,
        "processedKeys": 4,
        "simulatedKeys": 0,
        "failedKeys": 0,
        "storedEvents": 12,
        "updatedEvents": 0,
        "windowsProcessed": 8,
        "constraintInserts": 12,
        "constraintUpdates": 0,
        "manualFallbackInserts": 0,
        "manualFallbackUpdates": 0,
        "manualFallbackWindows": 0,
        "manualFallbackKeys": 0,
        "issuesByCode": {},
    }
    t.update(telemetry)
    return {
        "success": True,
        "processed": 3,
        "successful": 3,
        "errors": 0,
        "warningCount": 0,
        "timestamp": "2025-10-08T02:00:01.000Z",
        "telemetry": t,
        "flags": {"enableDailyUsageWindows": True},
    }


# -- exchange ----------------------------------------------------------------------------------------


def test_a_200_json_object_is_judgeable() -> None:
    assert exchange_problem(Exchange((answer(200, json.dumps(good_body()).encode()),))) is None


def test_405_names_the_method_and_the_option() -> None:
    t = answer(405, b"", reason="Method Not Allowed", content_type="text/plain")
    assert exchange_problem(Exchange((t,))) == (
        "the endpoint refused the method POST (405 Method Not Allowed); the app's handler may export GET "
        "only: rerun with --cron-method GET (CRON_METHOD=GET), or add a POST handler to the app"
    )


def test_html_500_shows_status_type_and_body() -> None:
    t = answer(
        500,
        b"<html><body>Internal Server Error</body></html>",
        content_type="text/html",
        reason="Internal Server Error",
    )
    assert exchange_problem(Exchange((t,))) == (
        "expected 200 OK with a JSON body, got status 500 Internal Server Error, content type text/html, "
        "body: <html><body>Internal Server Error</body></html>"
    )


def test_non_json_200() -> None:
    t = answer(200, b"ok", content_type="text/plain")
    assert (
        exchange_problem(Exchange((t,)))
        == "expected a JSON body, got status 200 OK, content type text/plain, body: ok"
    )


def test_json_that_is_not_an_object() -> None:
    t = answer(200, b"[1, 2]")
    assert exchange_problem(Exchange((t,))) == (
        "expected a JSON object, got list: status 200 OK, content type application/json, body: [1, 2]"
    )


def test_timeout_is_named() -> None:
    t = answer(
        None,
        error="timed out after 2s (ReadTimeout); raise --cron-timeout / CRON_TIMEOUT if the cron is just slow",
    )
    assert exchange_problem(Exchange((t,))) == (
        "POST http://127.0.0.1:1/api/cron/daily-usage failed: timed out after 2s (ReadTimeout); "
        "raise --cron-timeout / CRON_TIMEOUT if the cron is just slow"
    )


def test_401_to_the_secret_says_resolve_before_scheduling() -> None:
    t = answer(401, b'{"error":"Unauthorized"}', reason="Unauthorized")
    assert exchange_problem(Exchange((t,))).startswith(
        "the cron answered 401 Unauthorized to the secret: CRON_SECRET is missing or wrong for this target"
    )


def test_redirect_is_not_followed() -> None:
    t = answer(302, b"", reason="Found", headers=(("location", "https://elsewhere.example/"),))
    assert exchange_problem(Exchange((t,))).startswith(
        "the cron answered a 302 redirect to https://elsewhere.example/; redirects are not followed"
    )


def test_throttled_note_is_kept() -> None:
    t = answer(429, b"{}", reason="Too Many Requests", headers=(("retry-after", "3600"),))
    problem = exchange_problem(Exchange((t,), note="throttled: 429 with Retry-After '3600'"))
    assert problem.startswith(
        "throttled: 429 with Retry-After '3600'; status 429 Too Many Requests"
    )


def test_truncated_body_is_named() -> None:
    t = answer(
        200,
        b"{" * 10,
        body_truncated=True,
        error="response body larger than 10 bytes; read stopped there",
    )
    assert exchange_problem(Exchange((t,))).startswith(
        "the answer could not be read whole: response body larger than 10 bytes; read stopped there"
    )


def test_missing_exchange_fails_every_dependent_check() -> None:
    run = RecordedRun(
        "local", "POST", RUN_AT, None, problem="the endpoint refused the method POST", body=None
    )
    with pytest.raises(
        ExchangeMissing,
        match="the cron exchange was not made, so this check cannot judge it: the endpoint refused",
    ):
        run.require_exchange()


def test_a_run_happened_when_it_was_triggered_else_when_the_session_started() -> None:
    from cron_dryrun.config.settings import Settings
    from cron_dryrun.session.state import DryRunState

    state = DryRunState(settings=Settings(), started_at=datetime(2025, 10, 8, 1, 59, tzinfo=UTC))
    assert state.run_at == datetime(2025, 10, 8, 1, 59, tzinfo=UTC)
    state.run = RecordedRun("local", "POST", RUN_AT, None, problem=None, body=None)
    assert state.run_at == RUN_AT


# -- auth ---------------------------------------------------------------------------------------------


def test_success_body() -> None:
    assert judge_success_body(good_body(), []) is None
    assert judge_success_body({**good_body(), "success": False}, []) == (
        "expected success true in the 200 body, found success false"
    )
    assert judge_success_body(good_body(), ["$: 'telemetry' is a required property"]) == (
        "the 200 body does not match schemas/cron-response.schema.json: $: 'telemetry' is a required property"
    )


def test_auth_cases_cover_the_runbook_and_near_misses() -> None:
    cases = {c.name: c.authorization for c in auth_cases("s3cret")}
    assert cases["no Authorization header"] is None
    assert cases["wrong token of the same length"] == "Bearer xxxxxx"
    assert cases["shorter token (secret minus last character)"] == "Bearer s3cre"
    assert cases["longer token (secret plus one character)"] == "Bearer s3cretx"
    assert cases["near miss: last character changed"] == "Bearer s3crea"
    assert cases["token 'undefined'"] == "Bearer undefined"
    assert all(v != "Bearer s3cret" for v in cases.values())
    assert cases["empty bearer token"] == "Bearer"
    assert padded_secret_case("s3cret").authorization == "Bearer    s3cret"


def test_refusal_must_be_401_with_json_error() -> None:
    case = AuthCase("empty bearer token", "Bearer")
    assert judge_auth_case(case, answer(401, b'{"error":"Unauthorized"}')) is None
    assert judge_auth_case(case, answer(200, b"{}")) == (
        "empty bearer token: expected 401 Unauthorized, got status 200 OK, content type application/json, body: {}"
    )
    assert judge_auth_case(case, answer(401, b"nope", content_type="text/plain")) == (
        "empty bearer token: expected a JSON error body with the 401, got status 401 OK, content type text/plain, body: nope"
    )


def test_padded_secret_must_be_accepted() -> None:
    case = padded_secret_case("s3cret")
    assert judge_auth_case(case, answer(200, b"{}")) is None
    assert judge_auth_case(case, answer(401, b"{}")).startswith(
        "secret padded with spaces (the app trims the token): expected 200 (accepted), got status 401"
    )


def test_rejections_that_wrote_rows() -> None:
    row = UsageRow(7, 1, "gpt-4o", datetime(2025, 10, 7), datetime(2025, 10, 8))
    assert judge_rejections_wrote_nothing([]) is None
    assert judge_rejections_wrote_nothing([row]) == (
        "1 usage_events row(s) changed while the cron was answering 401s: a refused request must not "
        "start ingestion: id=7 key=1 model=gpt-4o window=[2025-10-07T00:00:00, 2025-10-08T00:00:00)"
    )


# -- flag -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            None,
            "flags.enableDailyUsageWindows is missing: the response has no `flags` object (the app's current source emits none); the runbook requires the JSON boolean true",
        ),
        ({}, "flags.enableDailyUsageWindows is missing from the `flags` object {}"),
        (
            {"enableDailyUsageWindows": False},
            "flags.enableDailyUsageWindows is false; expected the JSON boolean true",
        ),
        (
            {"enableDailyUsageWindows": "true"},
            'flags.enableDailyUsageWindows is "true" (a string); expected the JSON boolean true',
        ),
        (
            {"enableDailyUsageWindows": 1},
            "flags.enableDailyUsageWindows is 1 (a number); expected the JSON boolean true",
        ),
    ],
)
def test_flag_failures(flags: Any, message: str) -> None:
    body = good_body()
    body.pop("flags")
    if flags is not None:
        body["flags"] = flags
    assert judge_flag(body) == message


def test_flag_true_passes() -> None:
    assert judge_flag(good_body()) is None


# -- telemetry --------------------------------------------------------------------------------------------


def test_telemetry_healthy() -> None:
    j = judge_telemetry(good_body(), 4, ["PRICING_FALLBACK"])
    assert j.message() is None and j.warnings == []


def test_windows_processed_must_be_two_per_key() -> None:
    j = judge_telemetry(good_body(windowsProcessed=4), 4, [])
    assert (
        j.message()
        == "windowsProcessed is 4, expected 8 (2 daily windows x 4 OpenAI keys in provider_keys)"
    )


def test_errors_and_failed_keys() -> None:
    body = good_body(failedKeys=1)
    body["errors"] = 2
    assert (
        judge_telemetry(body, 4, []).message()
        == "errors is 2, expected 0; telemetry.failedKeys is 1, expected 0"
    )


def test_blocking_issue_codes_fail_and_pricing_fallback_warns() -> None:
    j = judge_telemetry(
        good_body(issuesByCode={"PRICING_FALLBACK": 1, "SCOPE_MISSING": 2}), 4, ["PRICING_FALLBACK"]
    )
    assert j.message() == (
        "blocking issues by code: SCOPE_MISSING: 2 (each needs a follow-up; --allow-issue-code CODE tolerates one)"
    )
    assert j.warnings == ["issues recorded as warnings: PRICING_FALLBACK: 1"]


def test_allow_issue_code_changes_the_allowed_set() -> None:
    j = judge_telemetry(good_body(issuesByCode={"SCOPE_MISSING": 2}), 4, ["SCOPE_MISSING"])
    assert j.message() is None


def test_manual_fallback_warns_and_flags_two_runs() -> None:
    j = judge_telemetry(
        good_body(manualFallbackWindows=6), 4, [], previous_manual_fallback_windows=6
    )
    assert j.message() is None
    assert (
        j.warnings[-1]
        == "manualFallbackWindows > 0 on two consecutive runs: open an ingestion ticket"
    )


def test_missing_telemetry() -> None:
    body = good_body()
    body.pop("telemetry")
    assert judge_telemetry(body, 4, []).message() == "the response has no `telemetry` object"


# -- window scoping ------------------------------------------------------------------------------------------


def rows(*windows: tuple[datetime | None, datetime | None]) -> DbObservation:
    changed = tuple(UsageRow(i + 1, 1, "gpt-4o", s, e) for i, (s, e) in enumerate(windows))
    return DbObservation(10, 10, changed)


def test_rows_in_yesterday_and_today_pass() -> None:
    obs = rows(
        (datetime(2025, 10, 7), datetime(2025, 10, 8)),
        (datetime(2025, 10, 8), datetime(2025, 10, 9)),
    )
    assert judge_window_scoping(RUN_AT, obs) is None


def test_offending_rows_are_listed_with_count() -> None:
    obs = rows(
        (datetime(2025, 10, 7), datetime(2025, 10, 8)),
        (datetime(2025, 10, 6), datetime(2025, 10, 7)),
        (datetime(2025, 10, 7), datetime(2025, 10, 9)),
        (None, None),
    )
    assert judge_window_scoping(RUN_AT, obs) == (
        "3 usage_events row(s) written by the run at 2025-10-08T02:00:00Z fall outside the expected daily "
        "windows (one UTC day starting 2025-10-07T00:00:00Z or 2025-10-08T00:00:00Z), the first "
        "id=2 key=1 model=gpt-4o window=[2025-10-06T00:00:00, 2025-10-07T00:00:00) (outside the "
        "run's windows)\nall of them:\n"
        "  id=2 key=1 model=gpt-4o window=[2025-10-06T00:00:00, 2025-10-07T00:00:00): outside the run's windows\n"
        "  id=3 key=1 model=gpt-4o window=[2025-10-07T00:00:00, 2025-10-09T00:00:00): outside the run's windows\n"
        "  id=4 key=1 model=gpt-4o window=[NULL, NULL): NULL window"
    )


def test_reported_writes_with_no_changed_rows_means_wrong_database() -> None:
    assert judge_window_scoping(RUN_AT, rows(), reported_writes=12) == (
        "the cron reports 12 stored/updated events but no usage_events row changed in this database: "
        "is DATABASE_URL the database the cron writes to?"
    )


# -- simulated keys --------------------------------------------------------------------------------------------


def test_simulated_fields_at_any_depth() -> None:
    body = good_body(simulatedKeys=1)
    body["telemetry"]["simulatedKeyCount"] = 2
    body["deep"] = [{"SimulatedUsage": True}, {"simulated": False}]
    assert find_simulated(body) == [
        ("$.telemetry.simulatedKeys", 1),
        ("$.telemetry.simulatedKeyCount", 2),
        ("$.deep[0].SimulatedUsage", True),
    ]
    assert judge_no_simulated_keys(body) == (
        "simulated usage reported (the runbook allows none): $.telemetry.simulatedKeys = 1, "
        "$.telemetry.simulatedKeyCount = 2, $.deep[0].SimulatedUsage = true"
    )


def test_zero_and_false_simulated_pass() -> None:
    body = good_body(simulatedKeys=0)
    body["telemetry"]["simulatedKeyCount"] = "0"
    assert judge_no_simulated_keys(body) is None


# -- rerun ------------------------------------------------------------------------------------------------------


def test_rerun_idempotent() -> None:
    assert judge_rerun(good_body(storedEvents=0, updatedEvents=12), 40, 40, 0) is None


def test_rerun_duplicates() -> None:
    assert judge_rerun(good_body(storedEvents=12, updatedEvents=0), 40, 52, 12) == (
        "a rerun inside the same windows is not idempotent: storedEvents is 12, expected 0 on a rerun; "
        "updatedEvents is 0, expected > 0 on a rerun; usage_events went from 40 to 52 rows, expected no change; "
        "12 unique-index key(s) of usage_admin_bucket_idx are held by more than one row"
    )


def test_rerun_after_every_key_failed_cannot_show_idempotence() -> None:
    body = good_body(storedEvents=0, updatedEvents=0, failedKeys=3, processedKeys=3,
                     windowsProcessed=0)  # fmt: skip
    assert judge_rerun(body, 40, 40, 0) == (
        "the rerun ingested nothing (failedKeys 3 of 3), so idempotence cannot be shown; fix what "
        "makes every key fail (see telemetry), then run again"
    )


def test_rerun_with_some_keys_failing_is_still_judged() -> None:
    body = good_body(storedEvents=0, updatedEvents=0, failedKeys=1, processedKeys=3)
    assert "not idempotent: updatedEvents is 0" in (judge_rerun(body, 40, 40, 0) or "")


# -- prerequisites ------------------------------------------------------------------------------------------------


def test_target_scheme() -> None:
    assert judge_target_scheme("http://127.0.0.1:9/api", loopback=True) is None
    assert (
        judge_target_scheme("https://staging.cogni-track.app/api/cron/daily-usage", loopback=False)
        is None
    )
    assert judge_target_scheme("http://staging.cogni-track.app/api", loopback=False) == (
        "CRON_URL http://staging.cogni-track.app/api is not https: the bearer secret would cross the network in clear; use https://"
    )


def test_window_columns() -> None:
    assert judge_window_columns(["id", "window_start", "window_end"]) is None
    assert judge_window_columns(["id", "window_start"]) == (
        "usage_events lacks column(s) window_end (the app's SCHEMA_MISSING condition): run the app's migrations first"
    )
    assert judge_window_columns([]) == (
        "table usage_events does not exist in DATABASE_URL's database (the app's SCHEMA_MISSING condition)"
    )


def test_exports_present(tmp_path: Any) -> None:
    assert (
        judge_exports_present([])
        == "no OpenAI usage export given: pass --openai-export PATH or set OPENAI_EXPORT"
    )
    missing = tmp_path / "nope.csv"
    assert judge_exports_present([str(missing)]) == (
        f"OpenAI usage export not found: {missing} (--openai-export / OPENAI_EXPORT)"
    )
    (tmp_path / "a.csv").write_text("x")
    assert judge_exports_present([str(tmp_path)]) is None
