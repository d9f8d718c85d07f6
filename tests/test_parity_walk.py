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
  (a) C does not import M (directly or through other modules; the package's import graph,
      imports under TYPE_CHECKING left out, as the layers contract reads it), so M's code
      came to C as a callable handed down, and M was entered before C: the request goes
      back up or sideways to a module it had passed (a progress callback or a generator
      defined in the orchestrator, the comparison asking the database side); or
  (b) C is an orchestrator (ORCHESTRATORS: the modules that hand the request to the
      stages) that had handed it to M before and to another non-leaf module since: it may
      not go back to a stage it moved past (the export side again after the database side).
  A call along an import (a stage into its own helpers, whichever of them ran first, or a
  helper shared below two stages) is the data's path and not a return; so are calls from
  outside parity (a thread's start, DuckDB).

The test prints the walk (the stays, the returns) with ``-s``. On the code before issue 25's
third round (main at 3b01ff2) the main thread made 26 stays in 9 modules with 9 returns
(ADBC, the export read now; 30 stays and 10 returns over COPY csv; 35 and 11 with a JSON
file beside the CSV); now 10 stays in 8 modules and none (18 and none with the JSON file),
but for the one named in CSV_PROBE.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import grimp
import pytest

from cron_dryrun.parity.engine import ParityRequest, run_parity
from cron_dryrun.parity.export_side import stage_for_run
from tests.test_db_reader import D8, varied_export, varied_rows
from tests.test_diff_command import D6, D7, seed
from tests.test_exports import bucket, page, result

PARITY = "cron_dryrun.parity."


@dataclass(frozen=True)
class Call:
    callee: str  # module, without the cron_dryrun.parity. prefix
    function: str
    caller: str  # the calling frame's module; the prefix removed when it is a parity module


ORCHESTRATORS = frozenset({"engine", "pipeline"})


@dataclass
class Walk:
    calls: list[Call]
    # does the first module import the second (directly or through others)?
    imports: Callable[[str, str], bool]
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
                continue  # from outside parity
            seen = handed[call.caller]
            callback = not self.imports(call.caller, call.callee)
            back = callback and first[call.callee] < first[call.caller]
            moved_past = (
                call.caller in ORCHESTRATORS and call.callee in seen and seen[-1] != call.callee
            )
            if back or moved_past:
                found.append(f"{call.caller} -> {call.callee}.{call.function}")
            if not seen or seen[-1] != call.callee:
                seen.append(call.callee)
        return found


def package_imports() -> Callable[[str, str], bool]:
    """Whether one parity module imports another, directly or through others (grimp: the
    graph import-linter checks the layers contract on; TYPE_CHECKING imports left out)."""
    graph = grimp.build_graph("cron_dryrun", exclude_type_checking_imports=True, cache_dir=None)

    def imports(importer: str, imported: str) -> bool:
        return bool(graph.chain_exists(importer=PARITY + importer, imported=PARITY + imported))

    return imports


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
    imports = package_imports()
    return {name: Walk(list(c), imports, callers) for name, c in calls.items()}


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
    # who imports whom in these made-up walks (the real ones ask the package's graph)
    imported = {
        ("engine", "pipeline"), ("pipeline", "export_side"), ("pipeline", "db_stage"),
        ("pipeline", "compare"), ("pipeline", "report"), ("export_side", "staging"),
        ("export_side", "readers"), ("staging", "readers"), ("staging", "formats"),
        ("compare", "rules"),
    }  # fmt: skip

    def imports(importer: str, module: str) -> bool:
        return (importer, module) in imported

    down = Walk(
        [
            Call("pipeline", "reconcile", "engine"),
            Call("db_stage", "read_db", "pipeline"),
            Call("db_reader", "load", "db_stage"),  # a loader handed down, entered first here
            Call("export_side", "read_exports", "pipeline"),
            Call("readers", "DailyRollup", "export_side"),
            Call("staging", "stage_file", "export_side"),
            Call("formats", "bucket_problem", "staging"),
            Call("readers", "read_json_pages", "staging"),  # a helper both import: fine
            Call("formats", "stamp", "readers"),
            Call("staging", "take", "staging"),
            Call("formats", "bucket_problem", "staging"),  # its own helper again: fine
            Call("readers", "time_overlaps", "export_side"),  # a stage's own loop: fine
            Call("compare", "compare", "pipeline"),
            Call("rules", "judge", "compare"),
            Call("rules", "judge", "compare"),  # a leaf, called again: fine
            Call("pipeline", "_range", "pipeline"),  # the orchestrator's own code
            Call("report", "report_dict", "pipeline"),
        ],
        imports,
    )
    assert down.returns() == []
    # formats, db_reader, rules and report call no parity module: leaves, not stays
    assert down.stays() == [
        "pipeline", "db_stage", "export_side", "readers", "staging", "readers", "compare"
    ]  # fmt: skip
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
        ],
        imports,
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


def test_two_files_one_of_them_json_pages_walk_down_too(app_database: str, tmp_path: Path) -> None:
    """Several files (the overlap check between them) and admin-API JSON pages (read by the
    reference reader into the exact reader's layout): the export side's other paths."""
    seed(app_database, varied_rows())
    csv_export = varied_export(tmp_path / "export.csv")
    midnight = datetime(D7.year, D7.month, D7.day, tzinfo=UTC)
    pages = tmp_path / "pages.json"
    pages.write_text(
        json.dumps([page([bucket(midnight, [result(user_id="user_json", project_id="proj_j")])])])
    )
    request = ParityRequest(
        exports=[csv_export, pages], dsn=app_database, report=tmp_path / "report.json",
        first_day=D6, last_day=D7, open_from=D8, db_reader="adbc",
    )  # fmt: skip
    walks = trace_walks(request, now=datetime(2025, 10, 8, 2, tzinfo=UTC))
    print(show(walks))
    main = walks[threading.main_thread().name]
    assert "read_json_pages" in {c.function for c in main.calls}  # the JSON path was taken
    assert "time_overlaps" in {c.function for c in main.calls}  # and the overlap check
    assert {name: w.returns() for name, w in walks.items()} == {name: [] for name in walks}


def test_the_trace_ends_with_the_run(app_database: str, tmp_path: Path) -> None:
    """The hook is removed after the run (and after a failing one)."""
    request = ParityRequest(
        exports=[tmp_path / "missing.csv"], dsn=app_database, report=tmp_path / "r.json",
        first_day=D6, last_day=D6 + timedelta(days=1),
    )  # fmt: skip
    with pytest.raises((OSError, ValueError)):
        trace_walks(request, now=datetime(2025, 10, 8, 2, tzinfo=UTC))
    assert sys.getprofile() is None
