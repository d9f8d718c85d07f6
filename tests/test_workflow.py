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


def run_job(
    job: Mapping[str, Any], workspace: Path, context: dict[str, str], env: dict[str, str]
) -> list[tuple[str, str, str]]:
    """Each `run:` step in order (bash -e, as GitHub's default shell); later steps only with
    ``if: always()`` once one failed. Returns (step name, outcome, output) per executed step."""
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
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-e", "-c", step["run"]],
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
    assert wf["concurrency"]["cancel-in-progress"] is False
    dry_run, promote = wf["jobs"]["dry-run"], wf["jobs"]["promote"]
    assert dry_run["environment"] == "staging" and promote["environment"] == "production"
    assert promote["needs"] == "dry-run"
    assert promote["if"] == "needs.dry-run.outputs.promote == 'true'"
    assert dry_run["outputs"]["promote"] == "${{ steps.gate.outputs.promote }}"
    upload = next(s for s in dry_run["steps"] if s.get("uses", "").startswith("actions/upload"))
    assert upload["if"] == "always()" and "audit/" in upload["with"]["path"]
    touching = [
        s for job in wf["jobs"].values() for s in job["steps"] if "vercel" in s.get("run", "")
    ]
    assert touching == promote["steps"] and len(touching) == 1
    # the evidence key: a staging secret, given only to the steps that sign and check
    gate = next(s for s in dry_run["steps"] if s.get("id") == "gate")
    assert "--require-signed" in gate["run"] and "cron-dryrun verify-evidence" in gate["run"]
    keyed = [
        s["name"] for s in dry_run["steps"] if "CRON_DRYRUN_EVIDENCE_KEY" in (s.get("env") or {})
    ]
    assert keyed == ["Dry run (pytest acceptance/ -m dryrun)", gate["name"]]
    assert "CRON_DRYRUN_EVIDENCE_KEY" not in (dry_run.get("env") or {})
    assert "CRON_DRYRUN_EVIDENCE_KEY" not in str(promote)


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
                "secrets.CRON_DRYRUN_EVIDENCE_KEY": EVIDENCE_KEY,
            }
            env = clean_env(
                PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                GITHUB_ACTIONS="true",
                GITHUB_RUN_ID=name,
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
    assert [o for _, o, _ in green] == ["success"] * 5, log
    assert "verdict: GO" in green[2][2]
    assert _outputs(green_github / "output")["promote"] == "true"
    assert "## 🟢 cron-dryrun gate: GO" in (green_github / "summary.md").read_text()

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

    # promote: its one step, with the Vercel CLI recorded instead of run
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "npx-calls"
    (bin_dir / "npx").write_text(f'#!/bin/sh\necho "$* <$(cat)" >> {calls}\n')
    (bin_dir / "npx").chmod(0o755)
    promote = run_job(
        _workflow()["jobs"]["promote"],
        tmp_path,
        {"secrets.VERCEL_TOKEN": VERCEL_TOKEN, "vars.VERCEL_ORG_ID": "team_x",
         "vars.VERCEL_PROJECT_ID": "prj_x"},
        clean_env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}"),
    )  # fmt: skip
    assert [o for _, o, _ in promote] == ["success"], promote
    assert calls.read_text().splitlines() == [
        f"--yes vercel@64 env rm ENABLE_DAILY_USAGE_WINDOWS production --yes --token {VERCEL_TOKEN} <",
        f"--yes vercel@64 env add ENABLE_DAILY_USAGE_WINDOWS production --token {VERCEL_TOKEN} <true",
    ]


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


@pytest.mark.parametrize("expression", ["vars.UNKNOWN", "secrets.X || 'fallback'"])
def test_resolve_knows_only_what_the_test_gives(expression: str) -> None:
    if "fallback" in expression:
        assert resolve(f"${{{{ {expression} }}}}", {"secrets.X": ""}) == "fallback"
    else:
        with pytest.raises(AssertionError, match="give it a value"):
            resolve(f"${{{{ {expression} }}}}", {})
