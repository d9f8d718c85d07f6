"""A child process that runs the acceptance suite once per job, in its own interpreter.

The fault matrix needs a process of its own for its runs (a fault may hang a request, and
the runs go two at a time), but not one interpreter start per run: starting Python and
importing pytest's plugins, DuckDB, pyarrow and psycopg costs about 2.5 s of a 3.8 s run.
A worker imports them once, then runs its jobs one after another with ``pytest.main``,
each with the job's environment and its output captured, as pytester's in-process runs do.

    python tests/suite_worker.py JOBS.json

JOBS.json is a list of ``{"args": [...], "env": {...}, "result": PATH}``. For each job the
worker writes ``{"returncode", "stdout", "stderr"}`` to ``result``, so nothing the suite
prints to the worker's own streams can be read as a result. The parent bounds the whole
worker with a timeout.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import pytest  # noqa: E402
from suite_runs import acceptance_command, preload  # noqa: E402


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One run of the suite with the job's arguments and environment; output captured."""
    modules = set(sys.modules)
    environ = dict(os.environ)
    os.environ.clear()
    os.environ.update(job["env"])
    out, err = io.StringIO(), io.StringIO()
    try:
        os.chdir(ROOT)
        # the command without the interpreter: `pytest acceptance/ -m dryrun ...`
        args = acceptance_command(*job["args"])[3:]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            returncode = int(pytest.main(args))
    finally:
        os.environ.clear()
        os.environ.update(environ)
        # the acceptance modules (and their conftest) are imported afresh by the next run
        for name in set(sys.modules) - modules:
            del sys.modules[name]
    return {"returncode": returncode, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main(jobs_path: str) -> int:
    preload()
    jobs: list[dict[str, Any]] = json.loads(Path(jobs_path).read_text())
    for job in jobs:
        result = run_job(job)
        Path(job["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
