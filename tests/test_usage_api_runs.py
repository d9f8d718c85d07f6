"""`--openai-usage=api`: the suite fetches the usage from the (stand-in) usage API before parity."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from suite_runs import ROOT, RunSuite
from tampering import edit_file, replace_once

from cron_dryrun.config.settings import SettingsError, resolve_settings


def _gate(audit: Path) -> dict[str, Any]:
    return json.loads((audit / "gate.json").read_text())


def _failed_steps(audit: Path) -> set[str]:
    return {s["name"] for s in _gate(audit)["steps"] if s["status"] != "passed"}


def test_local_stack_fetches_the_usage_into_the_audit_folder_and_its_manifest(
    run_suite: RunSuite,
    tmp_path: Path,
) -> None:
    audit = tmp_path / "audit"
    result = run_suite("--openai-usage=api", f"--audit-dir={audit}", shared_postgres=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "verdict: GO" in result.stdout
    (usage,) = (audit / "telemetry-audit").glob("usage-*")
    page = usage / "org-1" / "page-001.json"
    assert json.loads(page.read_text())["object"] == "page"
    assert (usage / "org-1" / "page-001.json.sha256").is_file()
    manifests = "".join(p.read_text() for p in (audit / "manifests").glob("*.sha256"))
    assert f"  {page.relative_to(audit).as_posix()}\n" in manifests
    assert "openai usage (api): organisation 1: 1 page(s), 2 bucket(s)" in result.stdout
    verify = subprocess.run(
        [sys.executable, "-m", "cron_dryrun.cli", "verify-evidence", f"--audit-dir={audit}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    edit_file(page, replace_once('"input_tokens": ', '"input_tokens": 1'))
    verify = subprocess.run(
        [sys.executable, "-m", "cron_dryrun.cli", "verify-evidence", f"--audit-dir={audit}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verify.returncode == 1
    assert f"{page.relative_to(audit).as_posix()}: changed" in verify.stderr


def test_usage_that_differs_from_the_database_fails_parity_as_an_export_file_would(
    run_suite: RunSuite,
    tmp_path: Path,
) -> None:
    audit = tmp_path / "audit"
    result = run_suite(
        "--openai-usage=api", "--fault=token-drift", f"--audit-dir={audit}", shared_postgres=True
    )
    assert result.returncode == 1, result.stdout[-3000:]
    assert _failed_steps(audit) == {"parity"}
    (parity,) = [c for c in _gate(audit)["checks"] if c["name"] == "parity"]
    assert "output_tokens" in parity["reason"], parity["reason"]


def test_staging_mode_fetches_with_the_admin_key_from_the_environment(
    run_suite: RunSuite, pg_server: Any, tmp_path: Path
) -> None:
    from cron_dryrun.standin import start_local_stack
    from cron_dryrun.target.database import create_app_database

    app_dsn = create_app_database(pg_server.dsn)
    with start_local_stack(app_dsn, secret="staging-like-secret-42") as stack:
        base = dict(CRON_URL=stack.cron_url, CRON_SECRET=stack.secret, DATABASE_URL=app_dsn)
        good = run_suite(
            "--openai-usage=api", f"--openai-base-url={stack.openai_url}",
            f"--audit-dir={tmp_path / 'good'}", env=dict(OPENAI_ADMIN_KEY=stack.admin_key, **base),
        )  # fmt: skip
        wrong_key = "sk-admin-wrong-key-0123456789abcdef"
        bad = run_suite(
            "--openai-usage=api", f"--openai-base-url={stack.openai_url}",
            f"--audit-dir={tmp_path / 'bad'}", env=dict(OPENAI_ADMIN_KEY=wrong_key, **base),
        )  # fmt: skip
    assert good.returncode == 0, good.stdout[-3000:]
    assert f"target: {stack.cron_url}" in good.stdout and "verdict: GO" in good.stdout
    assert bad.returncode == 1, bad.stdout[-3000:]
    assert _failed_steps(tmp_path / "bad") == {"prerequisites", "parity"}
    reasons = [c["reason"] for c in _gate(tmp_path / "bad")["checks"] if c["status"] != "passed"]
    assert len(reasons) == 2
    for reason in reasons:
        assert reason.startswith(
            "fetch-usage: organisation 1 (admin key 1), page 1: refused with 401: needs an admin "
            "key with usage read (api.usage.read)"
        ), reason
    for run, key, audit in ((good, stack.admin_key, "good"), (bad, wrong_key, "bad")):
        assert key not in run.stdout + run.stderr
        for path in (tmp_path / audit).rglob("*"):
            if path.is_file():
                assert key.encode() not in path.read_bytes(), path


def test_api_mode_against_staging_needs_an_admin_key_not_an_export() -> None:
    env = {"CRON_URL": "https://staging.example/api/cron/daily-usage", "OPENAI_USAGE": "api"}
    missing = resolve_settings(env=env).missing_remote_configuration()
    assert (
        "OPENAI_ADMIN_KEY is not set: --openai-usage=api needs an admin key with usage read in "
        "OPENAI_ADMIN_KEY (or OPENAI_ADMIN_KEYS, one per organisation; env only)"
    ) in missing
    assert not any("OPENAI_EXPORT" in m for m in missing)
    keys = resolve_settings(env={**env, "OPENAI_ADMIN_KEYS": "k1,k2"})
    assert keys.openai_admin_keys == ("k1", "k2") and "k1" not in repr(keys)
    with pytest.raises(SettingsError) as caught:
        resolve_settings(cli={"openai_usage": "dashboard"})
    assert (
        str(caught.value)
        == "--openai-usage / OPENAI_USAGE: expected export or api (got 'dashboard')"
    )
    with pytest.raises(SettingsError) as caught:
        resolve_settings(cli={"openai_base_url": "http://usage.example/v1"})
    assert str(caught.value) == (
        "--openai-base-url / OPENAI_BASE_URL: admin keys are sent only over https to a "
        "non-loopback host (got 'http://usage.example')"
    )
