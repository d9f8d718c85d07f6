"""Running the acceptance suite in a child process, as an operator would (for the tests)."""

from __future__ import annotations

import os
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
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OPERATOR_VARIABLES)}
    env.update(extra)
    return env


def run_acceptance(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`pytest acceptance/ -m dryrun ARGS` from the project root, output captured."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "acceptance/",
        "-m",
        "dryrun",
        "-p",
        "no:cacheprovider",
        "-q",
        *args,
    ]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
