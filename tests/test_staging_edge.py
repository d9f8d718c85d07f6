"""The acceptance suite through a stand-in of Vercel's edge: compressed answers, protection.

Each run is `pytest acceptance/ -m dryrun` in its own process on the local stack, with
the stand-in's edge switched on (`--standin-compress`, `--standin-protection`), against
one shared PostgreSQL (a fresh database per run), two at a time.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from suite_runs import clean_env, run_acceptance

from cron_dryrun.database import RunningPostgres

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
}


def _run(name: str, database_url: str, root: Path) -> EdgeRun:
    args, env = RUNS[name]
    audit = root / name
    result = run_acceptance(
        *args,
        "--db-backend",
        "url",
        "--database-url",
        database_url,
        f"--audit-dir={audit}",
        env=clean_env(CRON_SECRET=SECRET, **env),
    )
    gate_path = audit / "gate.json"
    gate = json.loads(gate_path.read_text()) if gate_path.is_file() else None
    return EdgeRun(name, result.returncode, result.stdout + result.stderr, audit, gate)


@pytest.fixture(scope="module")
def edge_runs(
    pg_server: RunningPostgres, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, EdgeRun]:
    root = tmp_path_factory.mktemp("edge")
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda n: _run(n, pg_server.dsn, root), RUNS))
    return {run.name: run for run in runs}


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
