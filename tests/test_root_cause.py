"""The root cause of a NO-GO: one cause, its fix, and the failures that follow from it."""

from __future__ import annotations

from cron_dryrun.rules.root_cause import FLAG_FIX, RunSignals, find_root_cause

FLAG_OFF_RUN = [
    ("prerequisites", "passed"),
    ("auth_smoke", "passed"),
    ("flag_state", "failed"),
    ("telemetry", "failed"),
    ("window_scoping", "failed"),
    ("no_simulated_keys", "passed"),
    ("idempotent_rerun", "failed"),
    ("parity", "failed"),
]


def test_flag_off_leads_with_the_flag_and_its_fix() -> None:
    signals = RunSignals(flag_value=False, windows_processed=4, active_keys=4)
    cause = find_root_cause(signals, FLAG_OFF_RUN)
    assert cause is not None
    assert cause.lines() == [
        "root cause: ENABLE_DAILY_USAGE_WINDOWS is off in staging (flags.enableDailyUsageWindows "
        "is false; windowsProcessed 4: one window per key, not 2 x 4 daily windows)",
        "fix: set ENABLE_DAILY_USAGE_WINDOWS=true in the staging environment and redeploy, "
        "then run the dry run again",
        "consequences (these checks fail because of it): flag_state, telemetry, window_scoping, "
        "idempotent_rerun, parity",
    ]


def test_flag_off_against_the_real_app_is_seen_without_a_flags_object() -> None:
    """The app emits no `flags`: one window per key and unaligned rows give it away."""
    signals = RunSignals(windows_processed=3, active_keys=3, unaligned_rows_written=6)
    steps = [(n, "passed" if n not in ("flag_state", "window_scoping") else "failed")
             for n, _ in FLAG_OFF_RUN]  # fmt: skip
    cause = find_root_cause(signals, steps)
    assert cause is not None and cause.kind == "flag-off"
    assert cause.fix == FLAG_FIX
    assert cause.consequences == ("flag_state", "window_scoping")


def test_only_the_flags_object_missing_is_not_flag_off() -> None:
    signals = RunSignals(windows_processed=8, active_keys=4)
    steps = [(n, "failed" if n == "flag_state" else "passed") for n, _ in FLAG_OFF_RUN]
    assert find_root_cause(signals, steps) is None


def test_the_exchange_not_made_names_the_method_fix() -> None:
    signals = RunSignals(exchange_problem="the endpoint refused the method POST (405)",
                         exchange_status=405)  # fmt: skip
    steps = [(n, "passed" if n == "prerequisites" else "failed") for n, _ in FLAG_OFF_RUN]
    cause = find_root_cause(signals, steps)
    assert cause is not None
    assert cause.cause == (
        "the cron exchange was not made: the endpoint refused the method POST (405)"
    )
    assert cause.fix == (
        "rerun with --cron-method GET (CRON_METHOD=GET), or add a POST handler to the app"
    )
    assert cause.consequences[0] == "auth_smoke" and len(cause.consequences) == 7


def test_every_key_failing_is_the_cause_of_telemetry_parity_and_rerun() -> None:
    signals = RunSignals(windows_processed=0, active_keys=3, processed_keys=3, failed_keys=3,
                         issues_by_code={"UNKNOWN": 3}, flag_value=True)  # fmt: skip
    steps = [(n, "failed" if n in ("telemetry", "idempotent_rerun", "parity") else "passed")
             for n, _ in FLAG_OFF_RUN]  # fmt: skip
    cause = find_root_cause(signals, steps)
    assert cause is not None
    assert cause.cause == (
        "every key failed at the provider (failedKeys 3 of 3; issuesByCode UNKNOWN: 3), yet the "
        "cron answered 200: nothing was ingested"
    )
    assert cause.consequences == ("telemetry", "idempotent_rerun", "parity")


def test_one_failing_check_has_no_root_cause() -> None:
    steps = [(n, "failed" if n == "parity" else "passed") for n, _ in FLAG_OFF_RUN]
    assert find_root_cause(RunSignals(flag_value=True, windows_processed=8, active_keys=4),
                           steps) is None  # fmt: skip


# -- the terminal table --------------------------------------------------------------------------


def test_the_terminal_table_wraps_reasons_and_never_cuts_them() -> None:
    from cron_dryrun.rules.gate import StepResult
    from cron_dryrun.session.reporting import verdict_table_lines

    long_reason = (
        "parity check fail: 7 key-day(s) in the export but missing in the DB; the DB holds 7 "
        "row(s) whose windows are not UTC days (the flag-off signature: the cron fetched "
        "[now-24h, now) instead of daily windows), so they cannot match"
    )
    steps = [
        StepResult("auth_smoke", "passed", "14 test(s) passed"),
        StepResult("parity", "failed", long_reason),
        StepResult(
            "idempotent_rerun", "failed", "a rerun inside the same windows is not idempotent"
        ),
    ]
    lines = verdict_table_lines(steps, None, 80)
    assert all(len(line) <= 80 for line in lines)
    assert not any(line.rstrip().endswith("...") for line in lines)
    text = " ".join(line.strip() for line in lines)
    assert " ".join(long_reason.split()) in text  # every word, in order
    assert "what to do: the unique index is missing or the upsert is broken" in text


def test_consequences_are_marked_and_take_the_root_cause_fix() -> None:
    from cron_dryrun.rules.gate import StepResult
    from cron_dryrun.session.reporting import verdict_table_lines

    cause = find_root_cause(RunSignals(flag_value=False), [("flag_state", "failed")])
    assert cause is not None
    lines = verdict_table_lines([StepResult("flag_state", "failed", "flag is false")], cause, 100)
    assert lines == [
        "  !! flag_state         failed    flag is false [consequence of the root cause]"
    ]
