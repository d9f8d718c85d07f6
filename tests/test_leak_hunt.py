"""The leak hunt: the suite run in every failing mode the issue reproduced, with every flag
that shows more (``-l --tb=long -rA -vv --junitxml --html``) and every file pytest itself
writes (``--debug``, ``--log-file`` at DEBUG with ``--log-cli-level=DEBUG``,
``junit_logging=all``); the terminal and EVERY file written under the run's temporary
directory (not a list of known names) are scanned for each secret, and each 8-character run
of it, in plain, URL-encoded, base64 and hex forms. Zero hits, and every JSON/JSONL
artefact still parses.
"""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import psycopg
import pytest
from suite_runs import clean_env, guarded_env, netguard_attempts, recorded_files, run_acceptance

from cron_dryrun.redaction import MIN_VARIANT_LEN, REDACTED, derived_variants
from cron_dryrun.rules.checks import BODY_EXCERPT
from cron_dryrun.target.database import create_app_database, database_name, drop_database
from cron_dryrun.target.embedded import free_port

pytestmark = pytest.mark.slow

CRON_SECRET = "Leak-Hunt-Cron-5ecret-9f3a"
DB_PASSWORD = "Db-Pw-7c1e-Secr3t"
EXPORT_HEADER = (
    "start_time,end_time,start_time_iso,end_time_iso,project_id,num_model_requests,user_id,"
    "api_key_id,model,batch,service_tier,input_tokens,output_tokens\n"
)


RUN = 8  # no run of this many characters of a secret may survive anywhere


def forms(secret: str) -> set[str]:
    """The forms the hunt looks for (case-sensitive; hex in both cases)."""
    raw = secret.encode()
    found = {secret, quote(secret, safe=""), raw.hex(), raw.hex().upper()}
    for b64 in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        found |= {b64.decode(), b64.decode().rstrip("=")}
    return found


def pieces(secret: str) -> set[str]:
    """The secret and every 8-character run of it: what a cut before redaction leaves."""
    runs = {secret[i : i + RUN] for i in range(len(secret) - RUN + 1)}
    return {secret} | runs


@dataclass
class Outputs:
    terminal: str
    files: dict[str, str]  # name -> text: junit, html, every audit file


def hunt(outputs: Outputs, secrets: list[str]) -> list[str]:
    hits = []
    sources = {"terminal": outputs.terminal, **outputs.files}
    looked_for = {
        form: secret for secret in secrets for piece in pieces(secret) for form in forms(piece)
    }
    for form, secret in sorted(looked_for.items()):
        for name, text in sources.items():
            if form in text:
                at = text.index(form)
                hits.append(
                    f"{form!r} (of {secret!r}) in {name}: ...{text[max(0, at - 80) : at + 40]!r}"
                )
    return hits


def run_hunted(tmp_path: Path, env: dict[str, str], *extra: str) -> tuple[Any, Outputs]:
    audit = tmp_path / "audit"
    log = tmp_path / "netguard.jsonl"
    # the run's own temporary directory (TMPDIR: pytest-html's report before its copy, the
    # local stack's files): short, as a PostgreSQL socket path must be; hunted too
    run_tmp = Path(tempfile.mkdtemp(prefix="leak-hunt-"))
    result = run_acceptance(
        f"--audit-dir={audit}",
        "-l",
        "--tb=long",
        "-rA",
        "-vv",
        f"--junitxml={tmp_path / 'junit.xml'}",
        f"--html={tmp_path / 'report.html'}",
        # every file pytest itself writes: its trace, its log file, the logs in JUnit
        f"--debug={tmp_path / 'pytestdebug.log'}",
        f"--log-file={tmp_path / 'pytest.log'}",
        "--log-file-level=DEBUG",
        "--log-cli-level=DEBUG",
        "-o",
        "junit_logging=all",
        # a plugin that serialises every report (pytest-reportlog): it writes what
        # pytest_runtest_makereport left, so the reports' redaction must cover it
        f"--report-log={tmp_path / 'report-log.jsonl'}",
        *extra,
        env=guarded_env({**env, "TMPDIR": str(run_tmp)}, log),
        timeout=600,
    )
    files: dict[str, str] = {}
    # every file written under the test's and the run's temporary directories, whatever
    # wrote it: not a list of known names
    try:
        for root in (tmp_path, run_tmp):
            for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_socket()):
                text = path.read_bytes().decode("utf-8", errors="replace")
                files[str(path.relative_to(tmp_path) if root == tmp_path else path)] = text
                if audit in path.parents and path.suffix == ".json":
                    json.loads(text)  # still parses
                elif audit in path.parents and path.suffix == ".jsonl":
                    for line in text.splitlines():
                        json.loads(line)
    finally:
        shutil.rmtree(run_tmp, ignore_errors=True)
    assert netguard_attempts(log) == []
    return result, Outputs(result.stdout + result.stderr, files)


@pytest.fixture(scope="module")
def password_role(pg_server: Any) -> Iterator[tuple[str, str]]:
    """A role that must give its password (scram), on the shared server; (role, socket dsn)."""
    role = "leak_hunter"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        hba = Path(conn.execute("show hba_file").fetchone()[0])
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{DB_PASSWORD}'")
        original = hba.read_text()
        hba.write_text(
            f"local all {role} scram-sha-256\nhost all {role} 127.0.0.1/32 scram-sha-256\n"
            + original
        )
        conn.execute("select pg_reload_conf()")
    try:
        yield role, pg_server.dsn
    finally:
        with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
            hba.write_text(original)
            conn.execute("select pg_reload_conf()")
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def socket_dsn(server_dsn: str, user: str, password: str, dbname: str = "postgres") -> str:
    host = server_dsn.split("host=", 1)[1].split("&", 1)[0]
    return f"postgresql://{user}:{quote(password, safe='')}@/{dbname}?host={host}"


def down_url() -> str:
    return f"postgresql://suite:{DB_PASSWORD}@127.0.0.1:{free_port()}/app"


# -- modes that stop at the preflight or in settings (exit 4) --------------------------------------


@pytest.mark.parametrize(
    ("mode", "env", "secrets"),
    [
        (
            "newline secret",
            {"CRON_SECRET": "Newline-Cron-5ecret-0001\n"},
            ["Newline-Cron-5ecret-0001"],
        ),
        ("non-ASCII secret", {"CRON_SECRET": "Nön-Ascii-Cron-5ecret"}, ["Nön-Ascii-Cron-5ecret"]),
        (
            "unencoded password URL",
            {
                "CRON_URL": "https://staging.cogni-track.app/api/cron/daily-usage",
                "CRON_SECRET": CRON_SECRET,
                "DATABASE_URL": "postgresql://suite:P@ss:w/rd%#Q1@127.0.0.1:5432/app",
            },
            [CRON_SECRET, "P@ss:w/rd%#Q1", "ss:w/rd%#Q1"],
        ),
        (
            "keyword DSN with an unquoted space in the password",
            {
                "CRON_URL": "https://staging.cogni-track.app/api/cron/daily-usage",
                "CRON_SECRET": CRON_SECRET,
                "DATABASE_URL": "host=127.0.0.1 port=55432 dbname=app user=suite "
                "password=Pg1234 RedTail-7731",
            },
            [CRON_SECRET, "Pg1234 RedTail-7731", "RedTail-7731"],
        ),
        (
            "URL with an unencoded '@' in the password",
            {
                "CRON_URL": "https://staging.cogni-track.app/api/cron/daily-usage",
                "CRON_SECRET": CRON_SECRET,
                "DATABASE_URL": "postgresql://suite:Pg1234@TailPart-99@127.0.0.1:55432/app",
            },
            [CRON_SECRET, "Pg1234@TailPart-99", "TailPart-99@127.0.0.1:55432"],
        ),
        (
            "URL with an unencoded ':' in the password",
            {
                "CRON_URL": "https://staging.cogni-track.app/api/cron/daily-usage",
                "CRON_SECRET": CRON_SECRET,
                "DATABASE_URL": "postgresql://suite:Pg1234:TailPart-99@127.0.0.1:55432/app",
            },
            [CRON_SECRET, "Pg1234:TailPart-99", "TailPart-99"],
        ),
        (
            "DB down by keyword DSN",
            {
                "CRON_URL": "https://staging.cogni-track.app/api/cron/daily-usage",
                "CRON_SECRET": CRON_SECRET,
                "DATABASE_URL": f"host=127.0.0.1 port={free_port()} dbname=app user=suite "
                f"password={DB_PASSWORD}",
            },
            [CRON_SECRET, DB_PASSWORD],
        ),
        (
            "DB down by URL, userinfo in CRON_URL",
            {
                "CRON_URL": "https://ops:Url-Pw-Secr3t-42@staging.cogni-track.app/api/cron/daily-usage",
                "CRON_SECRET": CRON_SECRET,
                "DATABASE_URL": down_url(),
                "PGPASSWORD": "Pg-Env-Pw-Secr3t-77",
            },
            [CRON_SECRET, DB_PASSWORD, "Url-Pw-Secr3t-42", "Pg-Env-Pw-Secr3t-77"],
        ),
    ],
)
def test_no_secret_leaks_from_a_run_stopped_before_anything_is_sent(
    tmp_path: Path, mode: str, env: dict[str, str], secrets: list[str]
) -> None:
    export = tmp_path / "export.csv"
    export.write_text(EXPORT_HEADER)
    result, outputs = run_hunted(
        tmp_path, clean_env(OPENAI_EXPORT=str(export), DB_CONNECT_TIMEOUT="2", **env)
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, (mode, result.stdout[-2000:])
    assert "cron-dryrun:" in result.stderr, result.stderr[-2000:]
    assert hunt(outputs, secrets) == []
    assert recorded_files(tmp_path / "audit") == []


def test_no_secret_leaks_from_the_command_line_into_the_debug_trace(tmp_path: Path) -> None:
    # pytest writes its arguments to the trace before any plugin is configured
    result, outputs = run_hunted(
        tmp_path,
        clean_env(CRON_SECRET=CRON_SECRET),
        "--database-url=postgresql://suite:Pg1234@TailPart-99@127.0.0.1:55432/app",
        "--cron-url=https://ops:Url-Pw-Secr3t-42@staging.cogni-track.app/api/cron/daily-usage",
    )
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    assert "more than one '@' in the URL" in result.stderr
    assert "args=" in outputs.files["pytestdebug.log"]  # the header is there, redacted
    assert hunt(outputs, [CRON_SECRET, "Pg1234@TailPart-99", "Url-Pw-Secr3t-42"]) == []
    assert recorded_files(tmp_path / "audit") == []


# -- modes that run the checks and fail them (tracebacks, -l locals, evidence) ---------------------


def test_no_secret_leaks_when_the_database_is_down_by_url(tmp_path: Path) -> None:
    dsn = down_url()
    result, outputs = run_hunted(
        tmp_path,
        clean_env(CRON_SECRET=CRON_SECRET, DATABASE_URL=dsn),
        "--db-backend=url",
        "-k",
        "prerequisites or telemetry or parity",
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    assert "OperationalError" in result.stdout  # the tracebacks were there to leak from
    assert hunt(outputs, [CRON_SECRET, DB_PASSWORD]) == []


def test_no_secret_leaks_with_a_wrong_database_password(
    tmp_path: Path, password_role: tuple[str, str]
) -> None:
    role, server = password_role
    wrong = "Wrong-Db-Pw-5ecret-31"
    result, outputs = run_hunted(
        tmp_path,
        clean_env(CRON_SECRET=CRON_SECRET, DATABASE_URL=socket_dsn(server, role, wrong)),
        "--db-backend=url",
        "-k",
        "prerequisites or telemetry or parity",
    )
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    assert "password authentication failed" in result.stdout
    assert hunt(outputs, [CRON_SECRET, wrong, DB_PASSWORD]) == []


BYPASS_SECRET = "Leak-Hunt-Bypass-5ecret-71c4"
# where the quoted value starts in the body: around the excerpt's cut (checks.BODY_EXCERPT),
# so that the cut would fall 2 to 27 characters into it
CUT_OFFSETS = tuple(BODY_EXCERPT - k for k in (2, 5, 9, 14, 20, 27))


class _Echo(http.server.BaseHTTPRequestHandler):
    """A hostile endpoint: 401 quoting what it got in a header (the token) and late in its
    body, just across the excerpt's cut (the token, or the Vercel bypass secret, in turn)."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        token = self.headers.get("Authorization", "")
        bypass = self.headers.get("x-vercel-protection-bypass", "")
        n = len(self.seen)
        self.seen.append(token)
        quoted = (bypass if n % 3 == 2 else token.split(" ", 1)[-1]) or token
        head = '{"message": "invalid token, quoted at the end: '
        pad = max(0, CUT_OFFSETS[n % len(CUT_OFFSETS)] - len(head))
        body = (head + "." * pad + quoted + " (refused)" + "." * 200 + '"}').encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo-Token", token)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        return


def test_no_secret_leaks_from_an_endpoint_that_echoes_the_token(
    tmp_path: Path, pg_server: Any
) -> None:
    seen: list[str] = []
    handler = type("Handler", (_Echo,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app_dsn = create_app_database(pg_server.dsn)
    export = tmp_path / "export.csv"
    export.write_text(EXPORT_HEADER)
    try:
        result, outputs = run_hunted(
            tmp_path,
            clean_env(
                CRON_URL=f"http://127.0.0.1:{server.server_address[1]}/api/cron/daily-usage",
                CRON_SECRET=CRON_SECRET,
                VERCEL_AUTOMATION_BYPASS_SECRET=BYPASS_SECRET,
                DATABASE_URL=app_dsn,
                OPENAI_EXPORT=str(export),
            ),
        )
    finally:
        server.shutdown()
        server.server_close()
        drop_database(pg_server.dsn, database_name(app_dsn))
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout[-3000:]
    assert len(seen) > 10, result.stdout[-3000:] + result.stderr[-2000:]
    assert "invalid token, quoted at the end" in result.stdout
    # the files pytest itself wrote are among those hunted, and hold what was hunted for
    debug = outputs.files["pytestdebug.log"]
    assert "pytest_fixture_setup" in debug and "finish pytest_runtest_makereport" in debug
    assert "receive_response_headers" in outputs.files["pytest.log"]  # httpcore at DEBUG
    assert "X-Echo-Token" in outputs.files["pytest.log"]
    assert (
        "<system-out>" in outputs.files["junit.xml"] or "system-err" in outputs.files["junit.xml"]
    )
    # pytest-reportlog serialised every report, the failures' long text with them
    report_log = outputs.files["report-log.jsonl"]
    assert '"$report_type": "TestReport"' in report_log and '"outcome": "failed"' in report_log
    near_misses = [v for v in derived_variants(CRON_SECRET) if len(v) >= MIN_VARIANT_LEN]
    assert hunt(outputs, [CRON_SECRET, BYPASS_SECRET, *near_misses]) == []


def test_the_short_secret_warning_is_written_around_the_secret(tmp_path: Path) -> None:
    secret = "Shorter7"  # its near miss "Shorter" is a word of the old warning
    result, outputs = run_hunted(tmp_path, clean_env(CRON_SECRET=secret))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "warning: CRON_SECRET has 8 characters: under 16 is weak and hard to redact" in (
        result.stdout
    )
    warning_lines = [line for line in result.stdout.splitlines() if "CRON_SECRET has" in line]
    assert warning_lines and all(REDACTED not in line for line in warning_lines)
    assert hunt(outputs, [secret, "Shorter"]) == []


def test_a_common_word_secret_keeps_json_artefacts_and_the_ledger_whole(tmp_path: Path) -> None:
    result, outputs = run_hunted(tmp_path, clean_env(CRON_SECRET="true"))
    assert result.returncode == 0, result.stdout[-3000:]
    assert "verdict: GO" in result.stdout
    assert "warning: CRON_SECRET is 4 characters long" in result.stdout
    gate = json.loads((tmp_path / "audit" / "gate.json").read_text())
    assert gate["verdict"] == "GO" and gate["promotion_gate"] is False
    ledger = (tmp_path / "audit" / "cron-dry-run" / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(line)["verdict"] for line in ledger] == ["GO"]
    # "true" is also JSON's own word and ordinary prose; its encoded forms must not appear
    encoded = forms("true") - {"true"}
    assert [
        f for f in encoded if any(f in t for t in [outputs.terminal, *outputs.files.values()])
    ] == []
