"""Gate semantics: GO only when every required step ran and passed."""

from __future__ import annotations

import pytest

from cron_dryrun.rules.gate import REQUIRED_STEPS, CheckOutcome, decide, first_line


def all_passed() -> list[CheckOutcome]:
    return [CheckOutcome(f"acceptance/test_{s}.py::t", s, "passed") for s in REQUIRED_STEPS]


def test_all_steps_passed_is_go() -> None:
    verdict = decide(all_passed())
    assert verdict.go and verdict.label == "GO" and verdict.reasons == ()


@pytest.mark.parametrize("status", ["failed", "error", "skipped", "xfailed", "xpassed"])
def test_any_non_pass_is_no_go_with_reason(status: str) -> None:
    outcomes = [
        *all_passed(),
        CheckOutcome("acceptance/test_flag_state.py::x", "flag_state", status, "why"),
    ]
    verdict = decide(outcomes)
    assert not verdict.go
    assert verdict.reasons == (f"flag_state: {status} - why",)


def test_a_step_with_no_test_is_not_run_and_no_go() -> None:
    outcomes = [o for o in all_passed() if o.step != "parity"]
    verdict = decide(outcomes)
    assert verdict.reasons == (
        "parity: not-run - not run: no test of this step was selected or collected",
    )


def test_extra_reasons_make_it_no_go() -> None:
    verdict = decide(all_passed(), extra_reasons=["promotion gate: run 1 of 2"])
    assert not verdict.go and verdict.reasons == ("promotion gate: run 1 of 2",)


def test_first_line_trims() -> None:
    assert first_line("\n  hello\nworld") == "hello"
    assert first_line("x" * 200, limit=10) == "xxxxxxx..."


def test_a_deselected_test_makes_its_step_partial_and_no_go() -> None:
    """`-k "not refused"` leaves auth_smoke with passing tests only: not enough for GO."""
    ok = "acceptance/test_auth_smoke.py::test_secret_is_accepted_with_a_json_body"
    refused = [f"acceptance/test_auth_smoke.py::test_refused[{c}]" for c in ("no-header", "wrong")]
    outcomes = [o for o in all_passed() if o.step != "auth_smoke"]
    outcomes.append(CheckOutcome(ok, "auth_smoke", "passed"))
    verdict = decide(outcomes, collected={"auth_smoke": [ok, *refused]})
    assert not verdict.go and verdict.partial
    assert verdict.not_run == tuple(sorted(refused))
    assert verdict.reasons == (
        "auth_smoke: partial - partial: test_refused[no-header], test_refused[wrong] not run",
    )


def test_a_step_whose_collected_tests_all_did_not_run_names_them() -> None:
    outcomes = [o for o in all_passed() if o.step != "parity"]
    ids = [f"acceptance/test_parity.py::t{i}" for i in range(6)]
    verdict = decide(outcomes, collected={"parity": ids})
    assert verdict.reasons == ("parity: not-run - not run: t0, t1, t2, t3 and 2 more not run",)


def test_every_collected_test_ran_is_not_partial() -> None:
    outcomes = all_passed()
    verdict = decide(outcomes, collected={o.step: [o.nodeid] for o in outcomes})
    assert verdict.go and not verdict.partial


def test_a_run_stopped_before_the_trigger_shows_its_one_cause() -> None:
    from cron_dryrun.rules.gate import stopped_before_trigger

    verdict = stopped_before_trigger("configuration error: CRON_SECRET is not set")
    assert not verdict.go and verdict.reasons == ("configuration error: CRON_SECRET is not set",)
    assert {s.status for s in verdict.steps} == {"not-run"}
