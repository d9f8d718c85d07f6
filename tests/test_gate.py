"""Gate semantics: GO only when every required step ran and passed."""

from __future__ import annotations

import pytest

from cron_dryrun.gate import REQUIRED_STEPS, CheckOutcome, decide, first_line


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
