"""The 48-hour ledger: the completeness rules (freezegun), the jsonl file, the gate command."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
from freezegun import freeze_time

from cron_dryrun.cli import main
from cron_dryrun.evidence import LEDGER_RELPATH, EvidenceWriter, Redactor, stamp
from cron_dryrun.evidence.ledger import (
    LedgerEntry,
    LedgerError,
    append_entry,
    assess,
    entries_for,
    load_ledger,
    normalise_target,
    read_ledger,
)
from cron_dryrun.evidence.trust import record_run

T = datetime(2025, 10, 7, 2, 0, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
TARGET = "https://staging.cogni-track.app/api/cron/daily-usage"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"


def run(
    at: datetime, verdict: str = "GO", target: str = TARGET, mfw: int | None = 0
) -> LedgerEntry:
    return LedgerEntry(time=at, target=target, verdict=verdict, manual_fallback_windows=mfw)


def status_now(entries: list[LedgerEntry], start: datetime | None = None, **kw: object):  # type: ignore[no-untyped-def]
    # the rules read the clock only through `now`: freezegun's clock is the one passed
    return assess(entries, start, datetime.now(UTC), **kw)  # type: ignore[arg-type]


class TestRules:
    @freeze_time("2025-10-08T03:00:00Z")
    def test_runs_24h_apart_complete_it(self) -> None:
        status = status_now([run(T), run(T + 24 * H)])
        assert status.complete
        assert status.greens == 2
        assert status.describe() == (
            "complete: 2 green runs, 2025-10-07T02:00Z and 2025-10-08T02:00Z (24.0h apart), "
            "covering 48h since 2025-10-07T02:00Z"
        )

    @freeze_time("2025-10-07T15:00:00Z")
    def test_runs_12h_apart_do_not(self) -> None:
        status = status_now([run(T), run(T + 12 * H)])
        assert not status.complete
        assert status.greens == 2
        assert status.counted == (T,)
        assert (
            status.describe()
            == "run 1 of 2; next run due between 2025-10-07T22:00Z and 2025-10-08T06:00Z"
        )

    @freeze_time("2025-10-07T02:30:00Z")
    def test_one_run_says_when_the_next_is_due(self) -> None:
        assert status_now([run(T)]).describe() == (
            "run 1 of 2; next run due between 2025-10-07T22:00Z and 2025-10-08T06:00Z"
        )

    @freeze_time("2025-10-08T03:00:00Z")
    def test_a_red_run_between_two_greens_24h_apart_is_answered_by_the_later_green(self) -> None:
        assert status_now([run(T), run(T + 12 * H, "NO-GO"), run(T + 24 * H)]).complete

    @freeze_time("2025-10-09T03:00:00Z")
    def test_a_red_run_on_day_two_breaks_the_cadence(self) -> None:
        status = status_now([run(T), run(T + 24 * H, "NO-GO"), run(T + 48 * H)])
        assert not status.complete
        assert status.counted == (T + 48 * H,)
        assert status.describe() == (
            "run 1 of 2 (count restarted: 2025-10-07T02:00Z to 2025-10-09T02:00Z is more than 28h); "
            "next run due between 2025-10-09T22:00Z and 2025-10-10T06:00Z"
        )

    @freeze_time("2025-10-08T08:00:00Z")
    def test_a_trailing_red_run_blocks_completion(self) -> None:
        status = status_now([run(T), run(T + 24 * H), run(T + 28 * H, "NO-GO")])
        assert not status.complete
        assert status.blocking_red == T + 28 * H
        assert status.describe() == (
            "not complete: the run at 2025-10-08T06:00Z was NO-GO and no green run has followed it; "
            "2 green runs counted (2025-10-07T02:00Z and 2025-10-08T02:00Z); "
            "one more green run, at any time, completes it"
        )

    @freeze_time("2025-10-08T10:00:00Z")
    def test_a_red_before_the_first_green_does_not_matter(self) -> None:
        assert status_now([run(T - 6 * H, "NO-GO"), run(T), run(T + 24 * H)]).complete

    @freeze_time("2025-10-09T12:00:00Z")
    def test_a_gap_over_28h_does_not_complete_it(self) -> None:
        status = status_now([run(T), run(T + 29 * H)])
        assert not status.complete
        assert status.counted == (T + 29 * H,)
        assert status.describe().startswith(
            "run 1 of 2 (count restarted: 2025-10-07T02:00Z to 2025-10-08T07:00Z is more than 28h); "
        )

    @pytest.mark.parametrize(
        ("gap", "complete", "described"),
        [
            (
                19 * H + 59 * M,
                False,
                "run 1 of 2; next run due between 2025-10-07T22:00Z and 2025-10-08T06:00Z",
            ),
            (
                20 * H,
                False,
                "2 green runs counted (2025-10-07T02:00Z and 2025-10-07T22:00Z, 20.0h apart) "
                "cover 44.0h of the 48h; the next green run, due between 2025-10-08T18:00Z and "
                "2025-10-09T02:00Z, completes it",
            ),
            (
                24 * H,
                True,
                "complete: 2 green runs, 2025-10-07T02:00Z and 2025-10-08T02:00Z (24.0h apart), "
                "covering 48h since 2025-10-07T02:00Z",
            ),
            (
                28 * H,
                True,
                "complete: 2 green runs, 2025-10-07T02:00Z and 2025-10-08T06:00Z (28.0h apart), "
                "covering 52h since 2025-10-07T02:00Z",
            ),
            (
                28 * H + M,
                False,
                "run 1 of 2 (count restarted: 2025-10-07T02:00Z to 2025-10-08T06:01Z is more "
                "than 28h); next run due between 2025-10-09T02:01Z and 2025-10-09T10:01Z",
            ),
        ],
        ids=["19h59m", "20h", "24h", "28h", "28h01m"],
    )
    def test_the_48_hour_boundaries(self, gap: timedelta, complete: bool, described: str) -> None:
        """One rule (ledger.DRY_RUN_RULE): the counted runs must cover 48 h, each covering the
        24 h before it; on main, runs 20 h apart printed "complete ... covering 44h"."""
        status = assess([run(T), run(T + gap)], None, T + gap + M)
        assert status.complete is complete
        assert status.describe() == described
        if not complete:
            assert "complete:" not in status.describe()

    def test_a_span_just_short_of_48h_never_reads_as_48h(self) -> None:
        status = assess([run(T), run(T + 24 * H - M)], None, T + 24 * H)
        assert not status.complete
        assert "cover 47.9h of the 48h" in status.describe()

    def test_three_runs_20h_apart_cover_64h_and_complete_it(self) -> None:
        status = assess([run(T), run(T + 20 * H), run(T + 40 * H)], None, T + 41 * H)
        assert status.complete
        assert status.describe().endswith(
            "(20.0h, 20.0h apart), covering 64h since 2025-10-07T02:00Z"
        )

    def test_a_red_run_between_greens_24h_apart_is_answered_by_the_later_green(self) -> None:
        now = T + 25 * H
        assert assess([run(T), run(T + 12 * H, "NO-GO"), run(T + 24 * H)], None, now).complete
        blocked = assess([run(T), run(T + 24 * H), run(T + 24 * H + M, "NO-GO")], None, now)
        assert not blocked.complete
        assert blocked.describe().startswith(
            "not complete: the run at 2025-10-08T02:01Z was NO-GO and no green run has followed it"
        )

    def test_a_gap_over_28h_restarts_the_count_even_after_a_complete_pair_is_missed(self) -> None:
        status = assess([run(T), run(T + 30 * H), run(T + 50 * H)], None, T + 51 * H)
        assert not status.complete and status.counted == (T + 30 * H, T + 50 * H)
        assert "cover 44.0h of the 48h" in status.describe()

    @freeze_time("2025-10-08T12:00:00Z")
    def test_an_extra_green_the_same_day_is_not_counted_and_does_not_break_the_cadence(
        self,
    ) -> None:
        status = status_now([run(T), run(T + 3 * H), run(T + 24 * H)])
        assert status.complete
        assert status.counted == (T, T + 24 * H)

    @freeze_time("2025-10-08T10:00:00Z")
    def test_overdue(self) -> None:
        assert status_now([run(T - 24 * H - 10 * H)]).describe() == (
            "run 1 of 2; the next run was due by 2025-10-06T20:00Z and is overdue: "
            "the next green run restarts the count"
        )

    @freeze_time("2025-10-08T03:00:00Z")
    def test_runs_before_the_dry_run_start_do_not_count(self) -> None:
        entries = [run(T), run(T + 24 * H)]
        status = status_now(entries, start=T + 1 * H)
        assert not status.complete
        assert status.counted == (T + 24 * H,)

    @freeze_time("2025-10-08T03:00:00Z")
    def test_only_the_target_counts(self) -> None:
        entries = [run(T), run(T + 24 * H, target="local stack")]
        assert not status_now(entries, target=TARGET).complete
        assert status_now(entries, target="local stack").describe() == (
            "not complete: runs on the local stack never count toward promotion; only complete "
            "runs against a remote CRON_URL do"
        )

    @freeze_time("2025-10-08T03:00:00Z")
    def test_two_green_local_stack_runs_a_day_apart_never_complete_it(self) -> None:
        local = [run(T, target="local stack"), run(T + 24 * H, target="local stack")]
        assert not status_now(local).complete
        assert not status_now(local, target="local stack").complete
        # the default target is the latest remote run's, even when a local run came after it
        status = status_now([run(T), run(T + 24 * H), run(T + 25 * H, target="local stack")])
        assert status.complete and status.target == TARGET

    @freeze_time("2025-10-08T03:00:00Z")
    def test_spellings_of_one_url_are_one_target(self) -> None:
        other_spelling = "HTTPS://user@Staging.Cogni-Track.app:443/api/cron/daily-usage/?x=1#f"
        assert normalise_target(other_spelling) == TARGET
        assert normalise_target("http://127.0.0.1:80/cron") == "http://127.0.0.1/cron"
        assert normalise_target("http://127.0.0.1:8080/cron") == "http://127.0.0.1:8080/cron"
        assert status_now([run(T), run(T + 24 * H, target=other_spelling)]).complete
        assert not status_now([run(T), run(T + 24 * H, target=TARGET + "-v2")]).complete

    def test_one_targets_entries_in_their_order_whatever_the_spelling(self) -> None:
        spelled = run(T + H, target="HTTPS://Staging.Cogni-Track.app:443/api/cron/daily-usage/")
        entries = [run(T), run(T, target="local stack"), spelled, run(T, target=TARGET + "-v2")]
        assert entries_for(entries, TARGET) == [entries[0], spelled]
        assert entries_for(entries, "local stack") == [entries[1]]
        assert entries_for(entries, "https://elsewhere.example/cron") == []

    @freeze_time("2025-10-08T03:00:00Z")
    def test_partial_and_interrupted_runs_never_count(self) -> None:
        partial = LedgerEntry(time=T, target=TARGET, verdict="NO-GO", completeness="partial")
        stopped = LedgerEntry(
            time=T + 23 * H, target=TARGET, verdict="NO-GO", completeness="interrupted"
        )
        status = status_now([run(T - H), partial, stopped, run(T + 24 * H)])
        assert status.complete and status.not_counted == 2  # neither blocks as a red run
        assert status.reds == 0
        with pytest.raises(ValueError, match="a partial run cannot be GO"):
            LedgerEntry(time=T, target=TARGET, verdict="GO", completeness="partial")

    @freeze_time("2025-10-07T01:00:00Z")
    def test_no_runs(self) -> None:
        assert (
            status_now([]).describe() == "run 0 of 2: no runs recorded; trigger the first run now"
        )
        assert status_now([], start=T).describe() == (
            "run 0 of 2: no runs recorded since 2025-10-07T02:00Z; trigger the first run now"
        )

    @freeze_time("2025-10-08T03:00:00Z")
    def test_only_red_runs(self) -> None:
        assert status_now([run(T, "NO-GO")]).describe() == (
            "run 0 of 2: no green run yet; the next green run starts the count"
        )

    @freeze_time("2025-10-08T03:00:00Z")
    def test_a_corrupt_ledger_blocks_completion(self) -> None:
        status = status_now([run(T), run(T + 24 * H)], problems=["ledger.jsonl line 2: corrupt"])
        assert not status.complete
        assert status.describe() == (
            "not complete: the ledger has 1 problem(s): ledger.jsonl line 2: corrupt"
        )

    @freeze_time("2025-10-08T03:00:00Z")
    def test_manual_fallback_on_two_consecutive_runs_is_flagged(self) -> None:
        status = status_now([run(T, mfw=6), run(T + 24 * H, mfw=6)])
        assert status.complete  # a warning, not a blocker
        assert status.manual_fallback_streak
        assert status.manual_fallback_note == (
            "manualFallbackWindows > 0 on two consecutive runs (2025-10-07T02:00Z: 6, "
            "2025-10-08T02:00Z: 6): open an ingestion ticket (the unique-index upsert is not in use)"
        )
        assert not status_now([run(T, mfw=6), run(T + 24 * H, mfw=0)]).manual_fallback_streak


# -- the file -------------------------------------------------------------------------------------


def entry_full() -> LedgerEntry:
    return LedgerEntry(
        time=T,
        target=TARGET,
        verdict="GO",
        label="Dry run",
        telemetry={"windowsProcessed": 8, "updatedEvents": 0, "issuesByCode": {}},
        windows=(
            ("2025-10-06T00:00:00Z", "2025-10-07T00:00:00Z"),
            ("2025-10-07T00:00:00Z", "2025-10-08T00:00:00Z"),
        ),
        artefacts={"smoke_log": "cron-dry-run/smoke-20251007T020000Z.log"},
        manual_fallback_windows=0,
    )


def test_entries_round_trip_through_the_file_and_match_the_schema(tmp_path: Path) -> None:
    writer = EvidenceWriter(tmp_path, Redactor([]))
    append_entry(writer, entry_full())
    append_entry(writer, run(T + 24 * H, "NO-GO"))
    schema = json.loads((SCHEMAS / "ledger-entry.schema.json").read_text())
    for line in (tmp_path / LEDGER_RELPATH).read_text().splitlines():
        jsonschema.validate(json.loads(line), schema)
    entries = load_ledger(tmp_path / LEDGER_RELPATH)
    assert entries[0] == entry_full()
    assert [e.verdict for e in entries] == ["GO", "NO-GO"]


def test_a_missing_ledger_is_empty(tmp_path: Path) -> None:
    assert load_ledger(tmp_path / "nope.jsonl") == []


def test_a_corrupt_line_is_reported_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    good = json.dumps(entry_full().to_json())
    path.write_text(
        f"{good}\n{{not json\n{json.dumps({'time': 'x', 'target': 't', 'verdict': 'GO'})}\n"
    )
    read = read_ledger(path)
    assert len(read.entries) == 1
    assert read.problems[0].startswith(
        f"{path} line 2: corrupt ledger entry (Expecting property name"
    )
    assert (
        read.problems[1]
        == f"{path} line 3: corrupt ledger entry (field 'time' is not an ISO time: 'x')"
    )
    with pytest.raises(LedgerError, match="line 2: corrupt ledger entry"):
        load_ledger(path)


def test_a_bad_verdict_is_refused() -> None:
    with pytest.raises(ValueError, match="verdict must be 'GO' or 'NO-GO', got 'green'"):
        LedgerEntry(time=T, target=TARGET, verdict="green")


# -- cron-dryrun gate -----------------------------------------------------------------------------


def write_ledger(audit: Path, entries: list[LedgerEntry]) -> None:
    """Each entry recorded as the suite records a run: chained, with its run's manifest."""
    writer = EvidenceWriter(audit, Redactor([]))
    for e in entries:
        taken = len(list((audit / "manifests").glob("*.sha256")))
        record_run(writer, replace(e, run_id=e.run_id or f"{stamp(e.time)}-{taken}"))


@freeze_time("2025-10-08T03:00:00Z")
def test_gate_command_exits_0_when_complete(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_ledger(tmp_path, [run(T), run(T + 24 * H)])
    assert main(["gate", "--audit-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"dry run ({tmp_path / LEDGER_RELPATH}): complete: 2 green runs, 2025-10-07T02:00Z and "
        "2025-10-08T02:00Z (24.0h apart), covering 48h since 2025-10-07T02:00Z\n"
        f"counted: complete runs against {TARGET}\n"
    )


@freeze_time("2025-10-08T03:00:00Z")
def test_gate_command_names_the_counted_target_and_lists_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two green local-stack lines 24 h apart do not satisfy the gate; the output says why."""
    write_ledger(tmp_path, [run(T, target="local stack"), run(T + 24 * H, target="local stack")])
    assert main(["gate", "--audit-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        "counted: complete runs against local stack"
    ]
    write_ledger(
        tmp_path,
        [
            run(T + H),
            LedgerEntry(time=T + 2 * H, target=TARGET, verdict="NO-GO", completeness="partial"),
            run(T + 3 * H, target="https://preview.example.app/api/cron/daily-usage"),
        ],
    )
    assert main(["gate", "--audit-dir", str(tmp_path), "--target", TARGET + "/"]) == 1
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"counted: complete runs against {TARGET}",
        "  not counted: 1 partial or interrupted run(s) of that target",
        "  other target in the ledger: local stack: 2 run(s) "
        "(local stack, partial or interrupted: never counted)",
        "  other target in the ledger: https://preview.example.app/api/cron/daily-usage: 1 run(s)",
    ]


@freeze_time("2025-10-07T03:00:00Z")
def test_gate_command_exits_1_with_where_it_stands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_ledger(tmp_path, [run(T, mfw=3), run(T + H, mfw=3)])
    assert main(["gate", "--audit-dir", str(tmp_path), "--target", TARGET]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(
        "run 1 of 2; next run due between 2025-10-07T22:00Z and 2025-10-08T06:00Z"
    )
    assert out[1].startswith("warning: manualFallbackWindows > 0 on two consecutive runs")


@freeze_time("2025-10-08T03:00:00Z")
def test_gate_command_json_and_bad_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_ledger(tmp_path, [run(T), run(T + 24 * H)])
    assert (
        main(
            ["gate", "--audit-dir", str(tmp_path), "--dry-run-start", "2025-10-07T03:00Z", "--json"]
        )
        == 1
    )
    data = json.loads(capsys.readouterr().out)
    assert data["complete"] is False
    assert data["dry_run_start"] == "2025-10-07T03:00:00Z"
    assert main(["gate", "--audit-dir", str(tmp_path), "--dry-run-start", "yesterday"]) == 2
    assert capsys.readouterr().err == (
        "cron-dryrun gate: --dry-run-start / DRY_RUN_START: expected an ISO time like "
        "2025-10-07T02:00:00Z (got 'yesterday')\n"
    )


def test_gate_schema_accepts_a_verdict_with_the_ledger_status() -> None:
    schema = json.loads((SCHEMAS / "gate.schema.json").read_text())
    status = assess([run(T), run(T + 24 * H)], None, T + 25 * H)
    gate = {
        "verdict": "GO",
        "reasons": [],
        "checks": [
            {
                "name": "auth_smoke",
                "nodeid": "acceptance/test_auth.py::test_x",
                "status": "passed",
                "reason": "",
                "required": True,
            },
            {
                "name": "parity",
                "nodeid": None,
                "status": "not-run",
                "reason": "not collected",
                "required": True,
            },
        ],
        "target": TARGET,
        "run_at": "2025-10-08T02:00:00Z",
        "window_range": {"start": "2025-10-07T00:00:00Z", "end": "2025-10-09T00:00:00Z"},
        "versions": {"cron_dryrun": "0.1.0", "python": "3.11.7", "pytest": "8.3.0"},
        "dry_run": status.to_json(),
        "promotion_gate": True,
    }
    jsonschema.validate(gate, schema)
    gate["verdict"] = "MAYBE"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(gate, schema)


def test_the_48_hour_rule_is_stated_once_in_the_readme_and_gate_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from cron_dryrun.evidence.ledger import DRY_RUN_RULE

    readme = " ".join((Path(__file__).resolve().parent.parent / "README.md").read_text().split())
    assert DRY_RUN_RULE in readme
    with pytest.raises(SystemExit):
        main(["gate", "--help"])
    assert f"The dry run is {DRY_RUN_RULE}." in " ".join(capsys.readouterr().out.split())
