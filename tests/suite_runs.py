"""Running the acceptance suite in a child process, as an operator would (for the tests)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Variables an operator's shell may hold; a child run must see only what the test gives it.
OPERATOR_VARIABLES = (
    "CRON_",
    "DATABASE_URL",
    "DB_BACKEND",
    "OPENAI_",  # OPENAI_EXPORT, OPENAI_USAGE, OPENAI_BASE_URL, OPENAI_ADMIN_KEY(S)
    "GITHUB_",  # GITHUB_ACTIONS, GITHUB_STEP_SUMMARY: a child run is not the CI job
    "PARITY_",
    "AUDIT_DIR",
    "RUN_LABEL",
    "ALLOW_ISSUE",
    "DRY_RUN",
    "POSTGRES_IMAGE",
    "PYTEST_ADDOPTS",
    "VERCEL_",
    "SSL_CERT_",
    "PGPASSWORD",
    "PGSERVICE",
    "PGPASSFILE",
    "OPENAI_ADMIN",
)


NETGUARD_DIR = ROOT / "tests" / "netguard"
NETGUARD_LOG_VARIABLE = "CRON_DRYRUN_NETGUARD_LOG"


def guarded_env(env: dict[str, str], log: Path) -> dict[str, str]:
    """``env`` for a child Python whose every non-loopback socket.connect/getaddrinfo is
    refused and recorded in ``log`` (tests/netguard/sitecustomize.py); read it with
    ``netguard_attempts``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.touch()
    path = os.pathsep.join(p for p in (str(NETGUARD_DIR), env.get("PYTHONPATH", "")) if p)
    return {**env, "PYTHONPATH": path, NETGUARD_LOG_VARIABLE: str(log)}


def netguard_attempts(log: Path) -> list[dict[str, str]]:
    """Every refused attempt to reach a non-loopback host, as recorded by the guard."""
    import json

    if not log.is_file():
        raise AssertionError(f"{log}: the network guard log is missing; was guarded_env used?")
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def recorded_files(audit: Path) -> list[str]:
    """Files under ``audit`` other than the HTML report (and its checksums) and gate.json (the
    latest verdict: NO-GO with the cause) with its run's snapshot and the manifest of that
    snapshot alone, the only things a run stopped by the preflight writes: the ledger,
    summary, notes and smoke log must not be among them."""
    if not audit.exists():
        return []
    gate = audit / "gate.json"
    run_id = None
    if gate.exists():
        doc = json.loads(gate.read_text())
        assert doc["verdict"] == "NO-GO"
        run_id = doc.get("run_id")
    allowed = [r"gate\.json", r"(manifests/)?report(-[0-9TZ]+)?\.(html|sha256)(\.sha256)?"]
    if run_id:
        manifest = audit / "manifests" / f"{run_id}.sha256"
        if manifest.exists():  # it lists the gate snapshot, nothing else
            assert [line.split()[1] for line in manifest.read_text().splitlines()] == [
                f"gate-{run_id}.json"
            ]
        allowed.append(rf"gate-{re.escape(run_id)}\.json(\.sha256)?")
        allowed.append(rf"manifests/{re.escape(run_id)}\.sha256(\.sig)?")
    report = re.compile("|".join(allowed))
    return sorted(
        rel
        for rel in (p.relative_to(audit).as_posix() for p in audit.rglob("*") if p.is_file())
        if not report.fullmatch(rel)
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OPERATOR_VARIABLES)}
    env.update(extra)
    return env


def run_acceptance(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`pytest acceptance/ -m dryrun -q ARGS` from the project root, output captured."""
    return subprocess.run(
        acceptance_command("-q", *args),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def gate_of(audit: Path) -> dict[str, Any] | None:
    """The gate.json a run left in ``audit``; None when it wrote none."""
    path = audit / "gate.json"
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass(frozen=True)
class WorkerRun:
    """What one worker job's run returned and printed (as a child's CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


WORKER_TIMEOUT_S = 600  # a whole worker's share; a fault matrix half takes about 25 s


def run_in_workers(
    jobs: Sequence[tuple[Sequence[str], Mapping[str, str]]], scratch: Path, workers: int = 2
) -> list[WorkerRun]:
    """`pytest acceptance/ -m dryrun -q ARGS` once per job (ARGS, ENV), in ``workers`` child
    processes that run their share one after another (tests/suite_worker.py): a process
    apart from the tests', without an interpreter start per run. Results in the jobs' order."""
    from concurrent.futures import ThreadPoolExecutor

    scratch.mkdir(parents=True, exist_ok=True)
    specs = [
        {"args": ["-q", *args], "env": dict(env), "result": str(scratch / f"job-{n}.json")}
        for n, (args, env) in enumerate(jobs)
    ]

    def work(share: int) -> None:
        jobs_file = scratch / f"worker-{share}.json"
        jobs_file.write_text(json.dumps(specs[share::workers]))
        done = subprocess.run(
            [sys.executable, str(ROOT / "tests" / "suite_worker.py"), str(jobs_file)],
            cwd=ROOT,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT_S,
        )
        assert done.returncode == 0, f"a suite worker failed:\n{done.stdout}\n{done.stderr}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(workers)))
    results = [json.loads(Path(spec["result"]).read_text()) for spec in specs]
    return [WorkerRun(r["returncode"], r["stdout"], r["stderr"]) for r in results]


def shared_server_args(server: Any) -> tuple[str, ...]:
    """The local stack's database made on ``server`` (the session's one PostgreSQL, a fresh
    database per run) instead of an embedded server started for the run: 3 s a run."""
    return ("--db-backend", "url", "--database-url", str(server.dsn))


def acceptance_command(*args: str) -> list[str]:
    """The operator's command, `python -m pytest acceptance/ -m dryrun ARGS`, for a child."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "acceptance/",
        "-m",
        "dryrun",
        "-p",
        "no:cacheprovider",
        *args,
    ]


# -- in-process runs (pytester) -------------------------------------------------------------------
# The plugin's hooks (gate semantics, partial runs, refusals, path options, redaction of
# reports, the evidence-writing order) are tested in this process, as pytest's own
# testing/test_junitxml.py tests junitxml: one `pytester.runpytest` per run, no interpreter
# start, nothing imported twice. All of the plugin's state lives in config.stash, so each run
# starts clean. Child processes stay where a process is the point (signals, the netguard's
# sitecustomize, two suites at once, the whole-run leak hunt, the fault matrix's parallel runs).


@dataclass(frozen=True)
class SuiteRun:
    """One in-process run of the acceptance suite, parsed. ``returncode``, ``stdout`` and
    ``stderr`` read as a child's ``CompletedProcess`` does."""

    returncode: int
    stdout: str
    stderr: str
    audit: Path | None

    @property
    def gate(self) -> dict[str, Any]:
        """The run's gate.json (a test asking for it fails when the run wrote none)."""
        assert self.audit is not None, "the run was given no --audit-dir="
        doc: dict[str, Any] = json.loads((self.audit / "gate.json").read_text())
        return doc

    @property
    def ledger(self) -> list[dict[str, Any]]:
        """The ledger's lines (none when it was never written)."""
        assert self.audit is not None, "the run was given no --audit-dir="
        path = self.audit / "cron-dry-run" / "ledger.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]


ACCEPTANCE = ("acceptance/", "-m", "dryrun", "-q")


class RunSuite(Protocol):
    def __call__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        command: Sequence[str] = ACCEPTANCE,
        shared_postgres: bool = False,
    ) -> SuiteRun: ...


# Imported here once, before any in-process run: pytester drops the modules a run imports
# when it ends, and native extensions (duckdb, pyarrow, psycopg's) must not load twice.
_PRELOAD = (
    "duckdb",
    "pyarrow",
    "psycopg",
    "httpx",
    "jsonschema",
    # pytest plugins' own packages, which pytest imports late (hypothesis at the terminal
    # summary: 3 s a run when imported again, assertion rewriting included)
    "hypothesis",
    "pytest_html",
    "pytest_metadata",
    "xdist",
)


def preload() -> None:
    """Import the package (its commands aside), the libraries above and what the acceptance
    modules import, so no in-process run imports them again."""
    import importlib
    import pkgutil

    import cron_dryrun

    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    for info in pkgutil.walk_packages(cron_dryrun.__path__, "cron_dryrun."):
        if info.name.startswith("cron_dryrun.cli"):
            continue  # commands run as their own processes
        with contextlib.suppress(ImportError):
            importlib.import_module(info.name)
    for path in sorted((ROOT / "acceptance").glob("test_*.py")):
        # the acceptance modules' own imports (not the modules: pytest imports those)
        for line in path.read_text().splitlines():
            if line.startswith(("import ", "from ")) and "__future__" not in line:
                with contextlib.suppress(ImportError):
                    importlib.import_module(line.split()[1])


def run_in_process(
    pytester: pytest.Pytester,
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    command: Sequence[str] = ACCEPTANCE,
) -> SuiteRun:
    """`pytest COMMAND -p no:cacheprovider ARGS` in this process, from ``cwd`` (the project
    root), seeing the environment a child given ``clean_env(**env)`` sees. COMMAND is by
    default `acceptance/ -m dryrun -q`, as ``run_acceptance`` runs it."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(OPERATOR_VARIABLES):
                mp.delenv(name)
        for name, value in (env or {}).items():
            mp.setenv(name, value)
        mp.chdir(cwd or ROOT)
        result = pytester.runpytest(*command, "-p", "no:cacheprovider", *args)
    audit = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("--audit-dir=")), None)
    return SuiteRun(int(result.ret), _text(result.outlines), _text(result.errlines), audit)


def _text(lines: list[str]) -> str:
    """What was written, as a child's captured stream reads (each line ends in a newline)."""
    return "".join(f"{line}\n" for line in lines)
