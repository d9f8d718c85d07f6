"""A parity request walks down the data's path without returning to a module it left.

``run_parity`` runs on a small real case (real PostgreSQL, a small CSV export, each database
reader) under ``sys.setprofile`` / ``threading.setprofile``. Every ``call`` event into a
function of a ``cron_dryrun.parity.*`` module is recorded with the module of the frame that
made the call, per thread (the database is read in a thread of its own: each thread's walk is
judged on its own; interleaving the two would make the order depend on the scheduler).

Definitions (the issue's "16 stays in 7 modules, 9 returns"), over each thread's calls:

- A **leaf** is a parity module from which the run (any of its threads) makes no call into
  another parity module (formats' parsers, the pure rule, duck, readers here): entering it
  and coming straight back is a function call, not a step of the walk, so calls into leaves
  are left out of the walk (a leaf, by this definition, can carry the request nowhere). It
  is measured, not declared: a module that starts calling others stops being one.
- A **stay** is one entry of the walk: the module of a call event from another module into a
  non-leaf module, consecutive ones into the same module collapsed into one stay (a module
  calling its own functions never left: that opens no stay).
- A call event from module C into a non-leaf module M (C a parity module, C != M) is a
  **return** when
  (a) M was first entered before C: the request goes back up or sideways to a module it had
      passed (a stage calling back into the orchestrator, a progress callback defined there,
      the comparison asking the database side), or
  (b) C had called M before and called another non-leaf module since: a module handing the
      request to the stages in turn (the orchestrator) may not go back to a stage it moved
      past (the export side again after the database side).
  A module calling itself, calls down into a module first entered after the caller (its own
  helpers, the next stage) and calls from outside parity (a thread's start, DuckDB) are not
  returns.

The test prints the walk (the stays, the returns) with ``-s``. On the code before issue 25's
third round (main at 3b01ff2) the main thread made 26 stays in 9 modules with 14 returns
(ADBC; 30 stays, 14 returns over COPY csv) and the database thread 2; now 10 stays in 8
modules and none, but for the one named in CSV_PROBE.
"""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from cron_dryrun.parity.engine import ParityRequest, run_parity
from cron_dryrun.parity.export_side import stage_for_run
from tests.test_db_reader import D8, varied_export, varied_rows
from tests.test_diff_command import D6, D7, seed

PARITY = "cron_dryrun.parity."


@dataclass(frozen=True)
class Call:
    callee: str  # module, without the cron_dryrun.parity. prefix
    function: str
    caller: str  # the calling frame's module; the prefix removed when it is a parity module


@dataclass
class Walk:
    calls: list[Call]
    # modules that called another parity module, in any thread of the run (None: this walk's)
    callers: frozenset[str] | None = None

    def _path(self) -> list[Call]:
        callers = self.callers
        if callers is None:
            callers = frozenset(c.caller for c in self.calls if c.caller != c.callee)
        return [c for c in self.calls if c.callee in callers and c.callee != c.caller]

    def stays(self) -> list[str]:
        out: list[str] = []
        for call in self._path():
            if not out or out[-1] != call.callee:
                out.append(call.callee)
        return out

    def returns(self) -> list[str]:
        """Each return as 'caller -> callee.function' (definitions: the module docstring)."""
        first: dict[str, int] = {}
        handed: dict[str, list[str]] = defaultdict(list)  # non-leaf modules each one called
        found: list[str] = []
        for n, call in enumerate(self._path()):
            first.setdefault(call.callee, n)
            if call.caller not in first:
                continue  # itself, or from outside parity
            seen = handed[call.caller]
            back = first[call.callee] < first[call.caller]
            moved_past = call.callee in seen and seen[-1] != call.callee
            if back or moved_past:
                found.append(f"{call.caller} -> {call.callee}.{call.function}")
            if not seen or seen[-1] != call.callee:
                seen.append(call.callee)
        return found


def _module(frame: FrameType | None) -> str:
    name = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    return name.removeprefix(PARITY)


def trace_walks(request: ParityRequest, now: datetime) -> dict[str, Walk]:
    """run_parity under a profile hook: the calls into parity modules, per thread name."""
    calls: dict[str, list[Call]] = defaultdict(list)

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or not str(frame.f_globals.get("__name__", "")).startswith(PARITY):
            return
        calls[threading.current_thread().name].append(
            Call(_module(frame), frame.f_code.co_name, _module(frame.f_back))
        )

    threading.setprofile(hook)
    sys.setprofile(hook)
    try:
        run_parity(request, now=now)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    callers = frozenset(
        c.caller for thread in calls.values() for c in thread if c.caller != c.callee
    )
    return {name: Walk(list(c), callers) for name, c in calls.items()}


def show(walks: dict[str, Walk]) -> str:
    lines = []
    for name, walk in walks.items():
        stays = walk.stays()
        lines.append(f"thread {name}: {len(stays)} stays in {len(set(stays))} modules")
        lines.append("  " + " -> ".join(stays))
        returns = walk.returns()
        lines.append(f"  {len(returns)} returns" + (":" if returns else ""))
        lines.extend(f"    {r}" for r in returns)
    return "\n".join(lines)


def test_the_return_rule_sees_a_callback_up_and_a_stage_revisited() -> None:
    """The rule itself can fail: a stage calling the orchestrator back, the orchestrator
    going back to the export side after the comparison, the comparison asking the database
    side; and passes a walk that only goes down."""
    down = Walk(
        [
            Call("pipeline", "reconcile", "engine"),
            Call("export_side", "read_exports", "pipeline"),
            Call("staging", "stage_file", "export_side"),
            Call("formats", "bucket_problem", "staging"),
            Call("staging", "take", "staging"),
            Call("formats", "bucket_problem", "staging"),  # its own helper again: fine
            Call("db_side", "read_db", "pipeline"),
            Call("db_reader", "load", "db_side"),
            Call("compare", "compare_sides", "pipeline"),
            Call("rules", "judge", "compare"),
            Call("rules", "judge", "compare"),  # a leaf, called again: fine
            Call("pipeline", "_range", "pipeline"),  # the orchestrator's own code
            Call("report", "report_dict", "pipeline"),
        ]
    )
    assert down.returns() == []
    # formats, db_reader, rules and report call no parity module: leaves, not stays
    assert down.stays() == ["pipeline", "export_side", "staging", "db_side", "compare"]
    back = Walk(
        [
            Call("pipeline", "reconcile", "engine"),
            Call("export_side", "read_exports", "pipeline"),
            Call("pipeline", "<lambda>", "export_side"),  # progress callback up
            Call("db_side", "read_db", "pipeline"),
            Call("db_reader", "load", "db_side"),
            Call("compare", "compare_sides", "pipeline"),
            Call("rules", "judge", "compare"),
            Call("db_side", "probe", "compare"),  # back sideways to the database side
            Call("export_side", "metrics", "pipeline"),  # a stage revisited by the orchestrator
        ]
    )
    assert back.returns() == [
        "export_side -> pipeline.<lambda>",
        "compare -> db_side.probe",
        "pipeline -> export_side.metrics",
    ]


# The one call back that stays: the CSV reader's answer to "is this metric NULL in every row
# of the day?" is asked of PostgreSQL by the comparison, and only when a judged day's DB total
# of a metric is 0 while the export's is not (this case has one: user_n). Answering it up
# front would scan usage_events again on every run; ADBC answers it from its stats table.
CSV_PROBE = "compare -> db_reader.unrecorded"


@pytest.mark.parametrize("staged", [False, True], ids=["read-now", "staged-by-preflight"])
@pytest.mark.parametrize("reader", ["adbc", "copy-csv"])
def test_a_parity_request_never_returns_to_a_module_it_left(
    app_database: str, tmp_path: Path, reader: str, staged: bool
) -> None:
    seed(app_database, varied_rows())
    export = varied_export(tmp_path / "export.csv")
    if staged:  # as the run's preflight leaves it (the engine claims it)
        assert list(stage_for_run([export])) == [export]
    request = ParityRequest(
        exports=[export], dsn=app_database, report=tmp_path / "report.json",
        first_day=D6, last_day=D7, open_from=D8, db_reader=reader,
    )  # fmt: skip
    walks = trace_walks(request, now=datetime(2025, 10, 8, 2, tzinfo=UTC))
    print(show(walks))
    main = walks[threading.main_thread().name]
    # the walk was seen at all: the engine, the export side, the comparison and the rule
    assert {"engine", "pipeline", "export_side", "compare"} <= set(main.stays())
    assert "judge" in {c.function for c in main.calls if c.callee == "rules"}
    assert "db-totals" in walks  # the database was read in its own thread, and traced
    assert ("export_side", "staged") in {(c.callee, c.function) for c in main.calls} or not staged
    expected = [CSV_PROBE] if reader == "copy-csv" else []
    assert main.returns() == expected
    assert {name: w.returns() for name, w in walks.items() if w is not main} == {
        name: [] for name in walks if walks[name] is not main
    }


def test_the_trace_ends_with_the_run(app_database: str, tmp_path: Path) -> None:
    """The hook is removed after the run (and after a failing one)."""
    request = ParityRequest(
        exports=[tmp_path / "missing.csv"], dsn=app_database, report=tmp_path / "r.json",
        first_day=D6, last_day=D6 + timedelta(days=1),
    )  # fmt: skip
    with pytest.raises((OSError, ValueError)):
        trace_walks(request, now=datetime(2025, 10, 8, 2, tzinfo=UTC))
    assert sys.getprofile() is None
