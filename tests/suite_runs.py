"""Running the acceptance suite in a child process, as an operator would (for the tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
