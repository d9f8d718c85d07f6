"""The acceptance suite through a stand-in of Vercel's edge: compressed answers, protection.

Each run is `pytest acceptance/ -m dryrun` in its own process on the local stack, with
the stand-in's edge switched on (`--standin-compress`, `--standin-protection`), against
one shared PostgreSQL (a fresh database per run), two at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from suite_runs import clean_env, gate_of, run_in_workers

from cron_dryrun.target.pg_server import RunningPostgres

SECRET = "edge-Secret-5c1d9e7a3b"
BYPASS = "edge-Bypass-8b2f6d0c4e9a"


@dataclass(frozen=True)
class EdgeRun:
    name: str
    returncode: int
    output: str
    audit_dir: Path
    gate: dict[str, Any] | None

    def smoke(self) -> str:
        return next((self.audit_dir / "cron-dry-run").glob("smoke-*.log")).read_text()

    def reasons(self) -> dict[str, str]:
        assert self.gate is not None, self.output[-3000:]
        return {s["name"]: s["reason"] for s in self.gate["steps"]}


RUNS: dict[str, tuple[list[str], dict[str, str]]] = {
    "gzip": (["--standin-compress", "gzip"], {}),
    "br": (["--standin-compress", "br"], {}),
    "zstd": (["--standin-compress", "zstd"], {}),
    "protected": (["--standin-protection"], {}),
    "bypass": (
        ["--standin-protection", "--standin-compress", "br"],
        {"VERCEL_AUTOMATION_BYPASS_SECRET": BYPASS},
    ),
}


@pytest.fixture(scope="module")
def edge_runs(
    pg_server: RunningPostgres, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, EdgeRun]:
    root = tmp_path_factory.mktemp("edge")
    shared = ["--db-backend", "url", "--database-url", pg_server.dsn]
    jobs = [
        ([*args, *shared, f"--audit-dir={root / name}"], clean_env(CRON_SECRET=SECRET, **env))
        for name, (args, env) in RUNS.items()
    ]
    runs = {}
    for name, result in zip(RUNS, run_in_workers(jobs, root / "workers"), strict=True):
        output = result.stdout + result.stderr
        runs[name] = EdgeRun(name, result.returncode, output, root / name, gate_of(root / name))
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_a_compressed_answer_gives_go(coding: str, edge_runs: dict[str, EdgeRun]) -> None:
    run = edge_runs[coding]
    assert run.gate is not None and run.gate["verdict"] == "GO", run.output[-3000:]
    assert run.returncode == 0
    smoke = run.smoke()
    main = smoke.split("### main exchange\n", 1)[1].split("\n### ", 1)[0]
    assert f"< content-encoding: {coding}\n" in main  # the headers as received
    assert f"# body: content-encoding {coding}, " in main
    assert '"windowsProcessed":8' in main  # the decoded body


@pytest.mark.slow
def test_the_run_can_be_watched_and_durations_are_recorded(edge_runs: dict[str, EdgeRun]) -> None:
    run = edge_runs["gzip"]
    out = run.output
    assert "cron-dryrun: triggering POST http://127.0.0.1:" in out
    assert "/api/cron/daily-usage (main exchange), waiting up to 300 s\n" in out
    assert "cron-dryrun: main exchange: 200 OK in " in out
    assert "cron-dryrun: idempotent rerun: 200 OK in " in out
    assert "\nexchanges: main exchange 200 OK in " in out  # beside the verdict table
    assert " auth negatives 401 in " in out
    summary = (run.audit_dir / "cron-dry-run" / "summary.md").read_text()
    assert "- **Exchanges:** main exchange 200 OK in " in summary


@pytest.mark.slow
def test_protection_without_the_bypass_is_named_and_nothing_passes(
    edge_runs: dict[str, EdgeRun],
) -> None:
    run = edge_runs["protected"]
    assert run.gate is not None and run.gate["verdict"] == "NO-GO", run.output[-3000:]
    assert run.returncode == 1
    reasons = run.reasons()
    assert reasons["auth_smoke"].startswith(
        "blocked by Vercel Deployment Protection before reaching the app: "
        "set VERCEL_AUTOMATION_BYPASS_SECRET"
    ), reasons["auth_smoke"]
    assert "CRON_SECRET is missing or wrong" not in run.output
    assert "fix CRON_SECRET" not in run.output
    negatives = [c for c in run.gate["checks"] if "test_refused_without_the_secret" in c["nodeid"]]
    assert len(negatives) >= 13
    for check in negatives:  # the edge's 401 is not the app's: not judged, never passed
        assert check["status"] == "failed", check
        assert ": not judged: blocked by Vercel Deployment Protection" in check["reason"], check


@pytest.mark.slow
def test_the_bypass_gives_go_and_never_reaches_a_file(edge_runs: dict[str, EdgeRun]) -> None:
    run = edge_runs["bypass"]
    assert run.gate is not None and run.gate["verdict"] == "GO", run.output[-3000:]
    smoke = run.smoke()
    assert "> x-vercel-protection-bypass: [REDACTED]" in smoke
    assert "### auth negative: no Authorization header" in smoke
    hits = [] if BYPASS not in run.output else ["terminal output"]
    for name in ("protected", "bypass"):
        for path in edge_runs[name].audit_dir.rglob("*"):
            if path.is_file() and BYPASS.encode() in path.read_bytes():
                hits.append(str(path))
    assert hits == []
