""".github/workflows/cron-dry-run.yml, executed: its own `run:` steps, in order, as GitHub would.

The staging environment's variables and secrets point at the local stack (the stand-in cron
and OpenAI API, a real PostgreSQL) and a local bare git repository plays GitHub: the code is
pushed there, each run starts from a fresh clone of it (an ephemeral runner), and the evidence
branch lives there between runs. `uses:` steps are what the runner provides (checkout is the
clone, Python is this interpreter, the artifact upload is GitHub's) and are not executed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from suite_runs import ROOT, clean_env

from cron_dryrun.evidence import EvidenceWriter, Redactor, stamp
from cron_dryrun.evidence.chain import chained_line
from cron_dryrun.evidence.ledger import LedgerEntry
from cron_dryrun.evidence.trust import record_run

WORKFLOW = ROOT / ".github" / "workflows" / "cron-dry-run.yml"
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
BOT = "github-actions[bot]"
CRON_SECRET = "staging-like-secret-for-the-workflow-42"
VERCEL_TOKEN = "vercel-token-for-the-workflow-test-0123"
BYPASS_SECRET = "bypass-secret-for-the-workflow-test-0123"
SERVER, REPO = "https://github.example", "acme/app"
EVIDENCE_KEY = "evidence-key-of-the-staging-environment-0123"


def _workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def resolve(value: object, context: Mapping[str, str]) -> str:
    """``${{ a || 'b' }}`` with the values the test gives; an unknown expression fails the test."""

    def one(match: re.Match[str]) -> str:
        for alternative in match.group(1).split("||"):
            alternative = alternative.strip()
            if alternative.startswith("'") and alternative.endswith("'"):
                return alternative[1:-1]
            if alternative not in context:
                raise AssertionError(f"the workflow uses ${{{{ {alternative} }}}}: give it a value")
            if context[alternative]:
                return context[alternative]
        return ""

    return EXPRESSION.sub(one, str(value))


def _git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


# The one line no test can run here: the lock's 46 packages come from PyPI (the test's own
# environment has them). Dropped from the step; the step's other line installs the package.
NEEDS_PYPI = "pip install --require-hashes --no-deps -r requirements/ci.txt"


def run_job(
    job: Mapping[str, Any], workspace: Path, context: dict[str, str], env: dict[str, str]
) -> list[tuple[str, str, str]]:
    """Each `run:` step in order (bash -e, as GitHub's default shell); later steps only with
    ``if: always()`` once one failed. Returns (step name, outcome, output) per executed step.
    Secrets reach only the steps whose own ``env:`` names them (the job's carries none)."""
    done: list[tuple[str, str, str]] = []
    failed = False
    job_env = {k: resolve(v, context) for k, v in (job.get("env") or {}).items()}
    for step in job["steps"]:
        if "uses" in step:
            continue
        condition = str(step.get("if", "success()"))
        if failed and condition != "always()":
            if "id" in step:
                context[f"steps.{step['id']}.outcome"] = "skipped"
            done.append((step["name"], "skipped", ""))
            continue
        step_env = {k: resolve(v, context) for k, v in (step.get("env") or {}).items()}
        assert "${{" not in step["run"], f"{step['name']}: expressions belong in env:"
        script = "\n".join(line for line in step["run"].splitlines() if NEEDS_PYPI not in line)
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-e", "-c", script],
            cwd=workspace, env={**env, **job_env, **step_env},
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        outcome = "success" if result.returncode == 0 else "failure"
        failed = failed or outcome == "failure"
        if "id" in step:
            context[f"steps.{step['id']}.outcome"] = outcome
        done.append((step["name"], outcome, result.stdout + result.stderr))
    return done


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_the_workflow_has_the_gate_shape() -> None:
    wf = _workflow()
    triggers = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(triggers) == {"schedule", "workflow_dispatch"} and triggers["schedule"][0]["cron"]
    dry_run, promote = wf["jobs"]["dry-run"], wf["jobs"]["promote"]
    # per job: dry runs queue behind each other only; a promotion awaiting reviewers has its own
    assert "concurrency" not in wf
    assert dry_run["concurrency"] == {"group": "cron-dry-run-evidence", "cancel-in-progress": False}
    assert promote["concurrency"] == {"group": "cron-dry-run-promote", "cancel-in-progress": False}
    assert dry_run["environment"] == "staging" and promote["environment"] == "production"
    assert promote["needs"] == "dry-run"
    assert promote["if"] == "needs.dry-run.outputs.promote == 'true'"
    assert dry_run["outputs"]["promote"] == "${{ steps.gate.outputs.promote }}"
    upload = next(s for s in dry_run["steps"] if s.get("uses", "").startswith("actions/upload"))
    assert upload["if"] == "always()" and "audit/" in upload["with"]["path"]
    touching = [
        s for job in wf["jobs"].values() for s in job["steps"] if "vercel" in s.get("run", "")
    ]
    assert touching == promote["steps"][-1:]  # one step touches production: promote's last
    # the evidence key: a staging secret, given only to the steps that sign and check
    gate = next(s for s in dry_run["steps"] if s.get("id") == "gate")
    assert "--require-signed" in gate["run"] and "cron-dryrun verify-evidence" in gate["run"]
    keyed = [
        s["name"] for s in dry_run["steps"] if "CRON_DRYRUN_EVIDENCE_KEY" in (s.get("env") or {})
    ]
    assert keyed == ["Dry run (pytest acceptance/ -m dryrun)", gate["name"]]
    assert "CRON_DRYRUN_EVIDENCE_KEY" not in (dry_run.get("env") or {})
    # promote asks the gate again, signed runs only, before its production step; the key is
    # given to that step alone
    regate = promote["steps"][-2]
    assert "cron-dryrun gate --json --require-signed" in regate["run"]
    assert "cron-dryrun verify-evidence --require-signed" in regate["run"]
    assert [s["name"] for s in promote["steps"] if "CRON_DRYRUN_EVIDENCE_KEY" in str(s)] == [
        regate["name"]
    ]
    assert "CRON_DRYRUN_EVIDENCE_KEY" not in str(promote.get("env"))


def test_the_workflow_steps_run_against_the_local_stack_and_keep_the_ledger_on_the_branch(
    pg_server: Any, tmp_path: Path
) -> None:
    from cron_dryrun.standin import start_local_stack
    from cron_dryrun.target.database import create_app_database

    wf = _workflow()
    # GitHub: a bare repository holding the code (main) and, later, the evidence branch
    remote = tmp_path / "github.git"
    _git("init", "--bare", "--quiet", "-b", "main", str(remote))
    source = tmp_path / "source"
    files = _git("ls-files", "-co", "--exclude-standard", "-z", cwd=ROOT).split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            (source / rel).write_bytes((ROOT / rel).read_bytes())
    _git("init", "--quiet", "-b", "main", cwd=source)
    _git("add", "-A", cwd=source)
    _git("commit", "--quiet", "-m", "the suite", cwd=source)
    _git("push", "--quiet", str(remote), "main", cwd=source)

    app_dsn = create_app_database(pg_server.dsn)
    with start_local_stack(app_dsn, secret=CRON_SECRET) as stack:
        # the dry run's previous day: one green run 24 h ago, on the evidence branch
        seed = tmp_path / "seed"
        _git("clone", "--quiet", str(remote), str(seed))
        _git("checkout", "--quiet", "--orphan", "dry-run-evidence", cwd=seed)
        _git("rm", "-rf", "--quiet", ".", cwd=seed)
        # recorded as a run records itself (chained, manifest, signed with the staging key): an
        # operator given the key; a hand-written line would not count (test_the_gate_step_...)
        at = datetime.now(UTC) - timedelta(hours=24)
        earlier = LedgerEntry(at, stack.cron_url, "GO", run_id=f"{stamp(at)}-seed")
        record_run(EvidenceWriter(seed, Redactor([EVIDENCE_KEY])), earlier, key=EVIDENCE_KEY)
        _git("add", "-A", cwd=seed)
        _git("commit", "--quiet", "-m", "yesterday's run", cwd=seed)
        _git("push", "--quiet", "origin", "dry-run-evidence", cwd=seed)

        def one_run(name: str, admin_key: str) -> tuple[list[tuple[str, str, str]], Path]:
            workspace = tmp_path / name
            _git("clone", "--quiet", str(remote), str(workspace))  # actions/checkout
            github = tmp_path / f"{name}-github"
            github.mkdir()
            context = {
                "vars.CRON_URL": stack.cron_url,
                "vars.CRON_METHOD": "",
                "vars.OPENAI_BASE_URL": stack.openai_url,
                "vars.DRY_RUN_START": "",
                "inputs.run_label": "",
                "secrets.CRON_SECRET": stack.secret,
                "secrets.DATABASE_URL": app_dsn,
                "secrets.OPENAI_ADMIN_KEY": admin_key,
                "secrets.VERCEL_AUTOMATION_BYPASS_SECRET": BYPASS_SECRET,
                "steps.upload.outputs.artifact-url": f"{SERVER}/{REPO}/actions/runs/{name}/artifacts/7",
                "secrets.CRON_DRYRUN_EVIDENCE_KEY": EVIDENCE_KEY,
            }
            env = clean_env(
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                GITHUB_ACTIONS="true",
                GITHUB_RUN_ID=name,
                GITHUB_SERVER_URL=SERVER,
                GITHUB_REPOSITORY=REPO,
                GITHUB_OUTPUT=str(github / "output"),
                GITHUB_STEP_SUMMARY=str(github / "summary.md"),
                # the install step builds the workspace's package into a scratch folder: the
                # test's own environment (which already has every dependency) stays as it is
                PIP_TARGET=str(github / "site"),
                PIP_NO_DEPS="1",
                PIP_NO_INDEX="1",
                PIP_NO_BUILD_ISOLATION="false",  # pip reads this one inverted: false = no isolation
                PIP_DISABLE_PIP_VERSION_CHECK="1",
            )
            return run_job(wf["jobs"]["dry-run"], workspace, context, env), github

        # a run whose admin key the usage API refuses: NO-GO, evidence still published
        red, red_github = one_run("run-1", "sk-admin-refused-0123456789abcdef")
        green, green_github = one_run("run-2", stack.admin_key)

    outcomes = {name: outcome for name, outcome, _ in red}
    red_log = "\n".join(f"--- {n}: {o}\n{out[-2500:]}" for n, o, out in red)
    assert outcomes["Restore the evidence (branch dry-run-evidence into audit/)"] == "success", (
        red_log
    )
    assert outcomes["Dry run (pytest acceptance/ -m dryrun)"] == "failure", red_log
    assert outcomes["Publish the evidence (commit to dry-run-evidence)"] == "success", red
    assert _outputs(red_github / "output")["promote"] == "false"

    log = "\n".join(f"--- {n}: {o}\n{out[-2500:]}" for n, o, out in green)
    assert [o for _, o, _ in green] == ["success"] * 7, log
    assert "verdict: GO" in green[3][2]
    assert _outputs(green_github / "output")["promote"] == "true"
    assert "## 🟢 cron-dryrun gate: GO" in (green_github / "summary.md").read_text()
    # the summary links the evidence commit and the artifact (red run too, GitHub's URLs)
    for github, name in ((red_github, "run-1"), (green_github, "run-2")):
        summary = (github / "summary.md").read_text()
        sha = re.search(
            rf"\*\*Evidence:\*\* commit \[`(\w{{7}})`\]\({SERVER}/{REPO}/commit/(\w{{40}})\)",
            summary,
        )
        assert sha and sha.group(2).startswith(sha.group(1)), summary
        assert f"{SERVER}/{REPO}/blob/{sha.group(2)}/cron-dry-run/ledger.jsonl" in summary
        assert summary.rstrip().endswith(
            f"**Artifact:** [audit/, junit/ and gate-status.json]({SERVER}/{REPO}/actions/runs/{name}/artifacts/7)"
        )
    green_sha = _git("--git-dir", str(remote), "rev-parse", "dry-run-evidence").strip()
    assert f"/commit/{green_sha})" in (green_github / "summary.md").read_text()

    branch = "dry-run-evidence"
    history = _git("--git-dir", str(remote), "log", "--format=%an|%s", branch)
    assert history.splitlines() == [
        f"{BOT}|Dry run run-2: GO",
        f"{BOT}|Dry run run-1: NO-GO",
        "test|yesterday's run",
    ]
    ledger = _git("--git-dir", str(remote), "show", f"{branch}:cron-dry-run/ledger.jsonl")
    assert [json.loads(line)["verdict"] for line in ledger.splitlines()] == ["GO", "NO-GO", "GO"]
    assert all(json.loads(line)["sig"]["alg"] == "hmac-sha256" for line in ledger.splitlines())
    files = _git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", branch).splitlines()
    assert "gate.json" in files and not [f for f in files if f.endswith(".lock")]
    assert any(re.fullmatch(r"telemetry-audit/usage-[^/]+/org-1/page-001\.json", f) for f in files)
    for rel in files:
        blob = subprocess.run(
            ["git", "--git-dir", str(remote), "show", f"{branch}:{rel}"],
            capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        for secret in (
            CRON_SECRET,
            "sk-admin-refused",
            BYPASS_SECRET,
            stack.admin_key,
            EVIDENCE_KEY,
        ):
            assert secret.encode() not in blob, (rel, secret[:8])

    # promote: its one step, with a recorded Vercel CLI (production's variables in a folder)
    promote_runs(tmp_path)


VERCEL_CLI_STUB = """#!/bin/sh
# npx --yes vercel@<version> <command> ... --token <token>: recorded, production kept in $PROD
PATH=/usr/bin:/bin
echo "$*" >> "$CALLS"
shift 2
case "$1 $2" in
"env pull")
    : > "$3"
    echo 'OTHER_SECRET="not-for-the-log"' >> "$3"
    [ -f "$PROD/ENABLE_DAILY_USAGE_WINDOWS" ] &&
        echo "ENABLE_DAILY_USAGE_WINDOWS=\\"$(cat "$PROD/ENABLE_DAILY_USAGE_WINDOWS")\\"" >> "$3"
    echo "Downloading production Environment Variables" >&2 ;;
"env rm")
    [ -f "$PROD/refuse" ] && { echo "Error: the token may not remove variables" >&2; exit 1; }
    rm "$PROD/$3" ;;
"env add")
    cat > "$PROD/$3" ;;
"redeploy "*)
    echo "https://app-redeployed-$(wc -l < "$CALLS").vercel.app"
    echo "redeploying $2" >&2 ;;
*) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""


def promote_runs(tmp_path: Path) -> None:
    bin_dir, prod = tmp_path / "bin", tmp_path / "production"
    bin_dir.mkdir()
    prod.mkdir()
    calls = tmp_path / "vercel-calls"
    (bin_dir / "npx").write_text(VERCEL_CLI_STUB)
    (bin_dir / "npx").chmod(0o755)
    (prod / "ENABLE_DAILY_USAGE_WINDOWS").write_text("false")
    job = _workflow()["jobs"]["promote"]
    job = {**job, "steps": job["steps"][-1:]}  # the production step (the gate's: its own test)
    context = {"secrets.VERCEL_TOKEN": VERCEL_TOKEN, "vars.VERCEL_ORG_ID": "team_x",
               "vars.VERCEL_PROJECT_ID": "prj_x", "vars.VERCEL_PRODUCTION_URL": "https://app.example"}  # fmt: skip

    def promote(name: str) -> tuple[list[tuple[str, str, str]], list[str], str]:
        summary = tmp_path / f"{name}-summary.md"
        start = len(calls.read_text().splitlines()) if calls.exists() else 0
        env = clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", CALLS=str(calls),
                        PROD=str(prod), GITHUB_STEP_SUMMARY=str(summary), RUNNER_TEMP=str(tmp_path))  # fmt: skip
        done = run_job(job, tmp_path, dict(context), env)
        made = calls.read_text().splitlines()[start:]
        return done, made, summary.read_text() if summary.exists() else ""

    cli = "--yes vercel@64.0.2"
    token = f"--token {VERCEL_TOKEN}"
    first, made, summary = promote("first")
    assert [o for _, o, _ in first] == ["success"], first
    pull = made[0]
    assert re.fullmatch(
        rf"{cli} env pull \S+/vercel-env\.\w+ --environment=production --yes {token}", pull
    )
    assert made[1:] == [
        f"{cli} env rm ENABLE_DAILY_USAGE_WINDOWS production --yes {token}",
        f"{cli} env add ENABLE_DAILY_USAGE_WINDOWS production {token}",
        f"{cli} redeploy https://app.example {token}",
    ]
    assert (prod / "ENABLE_DAILY_USAGE_WINDOWS").read_text() == "true"
    assert not list(tmp_path.glob("vercel-env.*"))  # production's variables left no file
    assert "not-for-the-log" not in first[0][2] and "not-for-the-log" not in summary
    assert summary.splitlines() == [
        "### Production: ENABLE_DAILY_USAGE_WINDOWS promoted to `true`",
        "- was: `false`; now: `true`",
        "- production redeployed from https://app.example: https://app-redeployed-4.vercel.app "
        "(the value applies from this deployment on)",
        "- check: the deployment is Ready in Vercel; the next cron run answers "
        "`flags.enableDailyUsageWindows: true` and writes one row per key and UTC day",
        "- roll back: set ENABLE_DAILY_USAGE_WINDOWS to false in production and redeploy",
    ]

    # a later GO run asks again: production is read, found true, and left alone
    second, made, summary = promote("second")
    assert [o for _, o, _ in second] == ["success"], second
    assert len(made) == 1 and " env pull " in made[0]
    assert summary.startswith("### Production: ENABLE_DAILY_USAGE_WINDOWS already true\n")

    # an error of the CLI fails the job: nothing swallowed, nothing redeployed
    (prod / "ENABLE_DAILY_USAGE_WINDOWS").write_text("false")
    (prod / "refuse").write_text("")
    third, made, _ = promote("third")
    assert [o for _, o, _ in third] == ["failure"]
    assert "Error: the token may not remove variables" in third[0][2]
    assert not any(" env add " in call or " redeploy " in call for call in made)


def test_secrets_reach_only_the_steps_that_use_them() -> None:
    wf = _workflow()
    for job_name, job in wf["jobs"].items():
        job_env = " ".join(str(v) for v in (job.get("env") or {}).values())
        assert "secrets." not in job_env, job_name
        for step in job["steps"]:
            for name, value in (step.get("env") or {}).items():
                if "secrets." in str(value):
                    # pytest and cron-dryrun read their secrets from the environment
                    readers = ("pytest", "cron-dryrun ")
                    assert f"${name}" in step["run"] or any(r in step["run"] for r in readers), (
                        step["name"],
                        name,
                    )
    dry_run = {s["name"]: s for s in wf["jobs"]["dry-run"]["steps"]}
    with_secrets = [n for n, s in dry_run.items() if "secrets." in str(s.get("env"))]
    assert with_secrets == [
        "Dry run (pytest acceptance/ -m dryrun)",
        "Gate (is the 48-hour dry run complete?)",
    ]
    gate_env = dry_run["Gate (is the 48-hour dry run complete?)"]["env"]
    assert [n for n, v in gate_env.items() if "secrets." in str(v)] == ["CRON_DRYRUN_EVIDENCE_KEY"]


def test_actions_are_pinned_by_commit_and_the_install_is_hash_pinned() -> None:
    text = WORKFLOW.read_text()
    uses = re.findall(r"uses: (\S+)(.*)", text)
    assert uses and all(re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", u) for u, _ in uses), uses
    assert all(re.fullmatch(r" # v\d+\.\d+\.\d+", tag) for _, tag in uses), uses
    steps = [s.get("run", "") for s in _workflow()["jobs"]["dry-run"]["steps"]]
    check = next(i for i, run in enumerate(steps) if "scripts/check-lock.py" in run)
    install = next(i for i, run in enumerate(steps) if NEEDS_PYPI in run)
    assert check < install
    assert "pip install --no-deps --no-build-isolation ." in steps[install]
    assert 'npx --yes "$VERCEL_CLI"' in text and re.search(
        r"VERCEL_CLI: vercel@\d+\.\d+\.\d+ ", text
    )
    promote = _workflow()["jobs"]["promote"]["steps"][-1]["run"]
    assert "|| true" not in promote  # no error of the Vercel CLI is swallowed


def test_the_lock_matches_pyproject_and_a_drift_is_named(tmp_path: Path) -> None:
    check = [sys.executable, str(ROOT / "scripts" / "check-lock.py")]
    ok = subprocess.run(check, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout == "requirements/ci.txt matches pyproject.toml\n"
    (tmp_path / "requirements").mkdir()
    for rel in ("pyproject.toml", "requirements/ci.txt", "requirements/build.in"):
        (tmp_path / rel).write_bytes((ROOT / rel).read_bytes())
    pyproject = tmp_path / "pyproject.toml"
    before = pyproject.read_bytes()
    pyproject.write_text(
        pyproject.read_text()
        .replace('"httpx>=0.27"', '"httpx>=9.0"')
        .replace('"duckdb>=1.0",', '"duckdb>=1.0",\n    "rich>=13",')
    )
    assert pyproject.read_bytes() != before
    drift = subprocess.run([*check, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert drift.returncode == 1
    assert "  - 'httpx>=9.0': the lock pins httpx==" in drift.stderr
    assert "  - 'rich>=13' is not in the lock" in drift.stderr
    assert "Fix: bash scripts/lock.sh" in drift.stderr


def _gate_step(workspace: Path, github: Path) -> tuple[str, str]:
    """The dry-run job's Gate step, as it is, after a successful dry-run step: (promote, output)."""
    job = _workflow()["jobs"]["dry-run"]
    gate = next(s for s in job["steps"] if s.get("id") == "gate")
    context = {
        "vars.CRON_URL": TARGET,
        "vars.CRON_METHOD": "",
        "vars.OPENAI_BASE_URL": "",
        "vars.DRY_RUN_START": "",
        "inputs.run_label": "",
        "secrets.CRON_SECRET": CRON_SECRET,
        "secrets.DATABASE_URL": "",
        "secrets.OPENAI_ADMIN_KEY": "",
        "secrets.VERCEL_AUTOMATION_BYPASS_SECRET": BYPASS_SECRET,
        "secrets.CRON_DRYRUN_EVIDENCE_KEY": EVIDENCE_KEY,
        "steps.dryrun.outcome": "success",
    }
    github.mkdir()
    env = clean_env(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        GITHUB_OUTPUT=str(github / "output"),
    )
    ((_, outcome, output),) = run_job({**job, "steps": [gate]}, workspace, context, env)
    assert outcome == "success", output
    return _outputs(github / "output")["promote"], output


TARGET = "https://staging.example.app/api/cron/daily-usage"


def _recorded(audit: Path, at: datetime, key: str | None) -> str:
    run_id = f"{stamp(at)}-{'signed' if key else 'unsigned'}"
    entry = LedgerEntry(at, TARGET, "GO", run_id=run_id)
    record_run(EvidenceWriter(audit, Redactor([EVIDENCE_KEY])), entry, key=key)
    return run_id


def test_the_gate_step_promotes_only_runs_signed_with_the_staging_key(tmp_path: Path) -> None:
    """Hand-written lines (the issue's first attack) and runs recorded without the key never
    promote; two runs signed with the key, a day apart, do."""
    now = datetime.now(UTC)  # the gate reads the real clock; only the gap between runs matters
    forged = tmp_path / "forged"
    (forged / "audit" / "cron-dry-run").mkdir(parents=True)
    hand = [
        {"version": 1, "time": (now - timedelta(hours=h)).isoformat(), "target": TARGET,
         "verdict": "GO", "completeness": "complete"}
        for h in (50, 25)
    ]  # fmt: skip
    (forged / "audit" / "cron-dry-run" / "ledger.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in hand)
    )
    unsigned = _recorded(forged / "audit", now - timedelta(hours=24, minutes=5), None)
    _recorded(forged / "audit", now - timedelta(minutes=5), EVIDENCE_KEY)
    promote, output = _gate_step(forged, tmp_path / "forged-github")
    assert promote == "false", output
    assert '"reason": "not signed"' in output and f'"run_id": "{unsigned}"' in output
    assert '"reason": "not in the chain: the line has no chain hash' in output

    signed = tmp_path / "signed"
    _recorded(signed / "audit", now - timedelta(hours=24, minutes=5), EVIDENCE_KEY)
    _recorded(signed / "audit", now - timedelta(minutes=5), EVIDENCE_KEY)
    promote, output = _gate_step(signed, tmp_path / "signed-github")
    assert promote == "true", output
    assert EVIDENCE_KEY not in output

    # a line forged after the fact, chained by hand (no key): the chain holds, the gate refuses it
    ledger = signed / "audit" / "cron-dry-run" / "ledger.jsonl"
    last = ledger.read_text().splitlines()[-1]
    extra = LedgerEntry(now - timedelta(minutes=1), TARGET, "GO", run_id=f"{stamp(now)}-forged")
    with open(ledger, "a", encoding="utf-8") as handle:
        handle.write(chained_line(extra.to_json(), last, None) + "\n")
    _, output = _gate_step(signed, tmp_path / "signed-again-github")
    assert "no manifest for run" in output


def _promote_regate(tmp_path: Path, evidence: Path, name: str) -> tuple[str, str]:
    """promote's gate step, as it is, in a checkout whose origin holds ``evidence`` as the
    dry-run-evidence branch: (outcome, output)."""
    remote = tmp_path / f"{name}.git"
    _git("init", "--bare", "--quiet", "-b", "main", str(remote))
    _git("init", "--quiet", "-b", "dry-run-evidence", cwd=evidence)
    _git("add", "-A", cwd=evidence)
    _git("commit", "--quiet", "-m", "evidence", cwd=evidence)
    _git("push", "--quiet", str(remote), "dry-run-evidence", cwd=evidence)
    workspace = tmp_path / f"{name}-checkout"
    _git("init", "--quiet", "-b", "main", str(workspace))
    _git("commit", "--quiet", "--allow-empty", "-m", "the suite", cwd=workspace)
    _git("remote", "add", "origin", str(remote), cwd=workspace)
    job = _workflow()["jobs"]["promote"]
    step = next(s for s in job["steps"] if "--require-signed" in s.get("run", ""))
    context = {"vars.CRON_URL": TARGET, "secrets.CRON_DRYRUN_EVIDENCE_KEY": EVIDENCE_KEY}
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    ((_, outcome, output),) = run_job({**job, "steps": [step]}, workspace, context, env)
    return outcome, output


def test_promote_asks_the_gate_again_and_refuses_unsigned_runs(tmp_path: Path) -> None:
    """After the reviewers' approval, promote's own gate step reads the evidence branch again:
    two signed runs a day apart pass it; the same runs recorded without the key stop the job
    before its production step, and a ledger line written by hand does too."""
    now = datetime.now(UTC)  # the gate reads the real clock; only the gap between runs matters
    signed = tmp_path / "signed"
    for hours in (24, 0):
        _recorded(signed, now - timedelta(hours=hours, minutes=5), EVIDENCE_KEY)
    outcome, output = _promote_regate(tmp_path, signed, "signed")
    assert outcome == "success", output
    assert '"complete": true' in output and EVIDENCE_KEY not in output

    unsigned = tmp_path / "unsigned"
    for hours in (24, 0):
        _recorded(unsigned, now - timedelta(hours=hours, minutes=5), None)
    outcome, output = _promote_regate(tmp_path, unsigned, "unsigned")
    assert outcome == "failure", output

    forged = tmp_path / "forged"
    (forged / "cron-dry-run").mkdir(parents=True)
    hand = [
        {"version": 1, "time": (now - timedelta(hours=h)).isoformat(), "target": TARGET,
         "verdict": "GO", "completeness": "complete"}
        for h in (50, 25)
    ]  # fmt: skip
    (forged / "cron-dry-run" / "ledger.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in hand)
    )
    outcome, output = _promote_regate(tmp_path, forged, "forged")
    assert outcome == "failure", output


@pytest.mark.parametrize("expression", ["vars.UNKNOWN", "secrets.X || 'fallback'"])
def test_resolve_knows_only_what_the_test_gives(expression: str) -> None:
    if "fallback" in expression:
        assert resolve(f"${{{{ {expression} }}}}", {"secrets.X": ""}) == "fallback"
    else:
        with pytest.raises(AssertionError, match="give it a value"):
            resolve(f"${{{{ {expression} }}}}", {})
