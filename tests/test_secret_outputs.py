"""Issue 24, the pure parts: excerpts redacted before they are cut, the short-secret warning
written around the secret, and the DSN rules (both forms) checked before libpq sees a DSN."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from pluggy._tracing import TagTracer

from cron_dryrun.redaction import (
    REDACTED,
    Redactor,
    derived_variants,
    known_secrets,
    redacted_excerpt,
)
from cron_dryrun.rules.checks import BODY_EXCERPT, auth_cases, describe_answer
from cron_dryrun.session.pytest_outputs import (
    RedactingFilter,
    early_redactor,
    redact_debug_trace,
    redact_log_handlers,
)
from cron_dryrun.target.client import Transcript

SECRET = "Cut-Test-Secret-8c2d4e6f-AB"
BYPASS = "Bypass-Secret-Value-3e9d1c7b"
STARTED = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


def runs_of(value: str, n: int = 8) -> set[str]:
    """Every n-character run of ``value`` (the leak a cut leaves behind)."""
    return {value[i : i + n] for i in range(len(value) - n + 1)}


def pieces_left(text: str, values: list[str]) -> list[str]:
    lowered = text.lower()
    return sorted({run for v in values for run in runs_of(v) if run.lower() in lowered})


def echoing_answer(body: str, *, secrets: tuple[str, ...] = (), headers=()) -> Transcript:  # type: ignore[no-untyped-def]
    return Transcript(
        label="auth",
        method="POST",
        url="http://127.0.0.1:1/api/cron/daily-usage",
        request_headers=tuple(headers),
        request_body=b"",
        started_at=STARTED,
        status=500,
        reason="Internal Server Error",
        response_headers=(("content-type", "text/plain"),),
        response_body=body.encode(),
        secrets=secrets,
    )


# -- 1. redact, then cut --------------------------------------------------------------------------


@pytest.mark.parametrize("offset", range(BODY_EXCERPT - 30, BODY_EXCERPT + 2, 3))
@pytest.mark.parametrize(
    "quoted",
    [SECRET, *sorted(derived_variants(SECRET))],
    ids=lambda v: "secret" if v == SECRET else f"near miss {len(v)}",
)
def test_a_secret_across_the_excerpts_cut_leaves_no_8_character_piece(
    offset: int, quoted: str
) -> None:
    body = "f" * offset + quoted + " trailing text"
    described = describe_answer(echoing_answer(body, secrets=(SECRET,)))
    assert described.startswith("status 500 Internal Server Error, content type text/plain")
    assert pieces_left(described, [SECRET, *derived_variants(SECRET)]) == []


@pytest.mark.parametrize("offset", [BODY_EXCERPT - 20, BODY_EXCERPT - 8, BODY_EXCERPT - 1])
def test_the_bypass_secret_header_is_not_left_half_visible_by_the_cut(offset: int) -> None:
    # the client's secrets unknown here (hand-built transcript): the header sent is enough
    t = echoing_answer(
        "f" * offset + BYPASS + " and more text after it" * 3,
        headers=[("x-vercel-protection-bypass", BYPASS), ("Authorization", "Bearer undefined")],
    )
    described = describe_answer(t)
    assert pieces_left(described, [BYPASS]) == []
    assert described.endswith(" ...")


def test_a_short_probe_the_request_sent_stays_readable_in_the_answer() -> None:
    t = echoing_answer("invalid token undefined", headers=[("Authorization", "Bearer undefined")])
    assert describe_answer(t).endswith("body: invalid token undefined")


def test_the_cut_moves_before_a_marker_it_would_halve() -> None:
    redact = Redactor([SECRET]).redact
    for offset in range(90, 101):
        text = "a" * offset + SECRET + "b" * 50
        cut, was_cut = redacted_excerpt(text, 100, redact)
        assert was_cut
        assert cut == "a" * offset + (REDACTED if offset + len(REDACTED) <= 100 else ""), offset
    assert redacted_excerpt("short", 100, redact) == ("short", False)


# -- 2. where pytest writes: logging handlers, the --debug trace, reprs ---------------------------


def redaction_of(*secrets: str):  # type: ignore[no-untyped-def]
    redact = Redactor([v for s in secrets for v in known_secrets(s)]).redact  # near misses too
    return lambda: redact


def test_a_log_record_is_redacted_in_its_message_args_and_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter(redaction_of(SECRET)))
    logger = logging.getLogger("httpcore.http11.test-issue-24")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    try:
        # httpcore's DEBUG record of an endpoint echoing the token in a response header
        headers = [(b"X-Echo-Token", f"Bearer {SECRET}".encode())]
        logger.debug(
            "%s.complete return_value=%r", "receive_response_headers", (b"HTTP/1.1", 401, headers)
        )
        try:
            raise ValueError(f"connection to postgresql://u:{SECRET}@h failed")
        except ValueError:
            logger.exception("failed: %s", SECRET[:-1])
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "receive_response_headers.complete" in written and "X-Echo-Token" in written
    assert "ValueError" in written  # the traceback is kept, redacted
    assert pieces_left(written, [SECRET]) == []


def test_every_handler_pytest_owns_and_the_root_loggers_get_the_filter_once() -> None:
    plugin = SimpleNamespace(
        log_file_handler=logging.StreamHandler(io.StringIO()),
        log_cli_handler=logging.NullHandler(),
        caplog_handler=logging.StreamHandler(io.StringIO()),
        report_handler=logging.StreamHandler(io.StringIO()),
    )
    manager = SimpleNamespace(get_plugin=lambda name: plugin if name == "logging-plugin" else None)
    root = logging.getLogger()
    extra = logging.StreamHandler(io.StringIO())
    root.addHandler(extra)
    before = list(root.filters)
    try:
        covered = redact_log_handlers(manager, redaction_of(SECRET))
        assert redact_log_handlers(manager, redaction_of(SECRET)) == []  # idempotent
        assert set(covered) >= {*vars(plugin).values(), extra}
        logging.getLogger("psycopg.test-issue-24").warning("password=%s", SECRET)
        for handler in (plugin.log_file_handler, extra):
            assert isinstance(handler, logging.StreamHandler)
            assert pieces_left(handler.stream.getvalue(), [SECRET]) == []
    finally:
        root.removeHandler(extra)
        root.filters[:] = before
        for handler in root.handlers:
            handler.filters[:] = [f for f in handler.filters if not isinstance(f, RedactingFilter)]


LOGS_ON_THE_ROOT_LOGGER = """
import logging
import os

import pytest

@pytest.mark.dryrun
@pytest.mark.prerequisites
def test_logs_it():
    logging.getLogger().warning("plain %s", os.environ.get("CRON_SECRET", "none"))
"""


def test_a_second_session_in_the_process_redacts_its_own_log_file(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sessions in one process (pytester, in-process): the root logger keeps the first
    session's filter, and a record it redacted (for the first session's secrets) is redacted
    again by the second session's, so the second's --log-file holds none of its secret."""
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    pytester.makepyfile(test_logs=LOGS_ON_THE_ROOT_LOGGER)
    args = ("-m", "dryrun", "--log-file=log.txt", "--log-file-level=INFO")
    first = pytester.runpytest(*args, f"--audit-dir={pytester.path / 'first'}")
    assert first.ret == pytest.ExitCode.TESTS_FAILED, first.stdout.str()[-2000:]  # a partial run
    monkeypatch.setenv("CRON_SECRET", SECRET)
    second = pytester.runpytest(*args, f"--audit-dir={pytester.path / 'second'}")
    assert second.ret == pytest.ExitCode.TESTS_FAILED, second.stdout.str()[-2000:]
    log = (pytester.path / "log.txt").read_text()
    assert "plain [REDACTED]" in log
    assert pieces_left(log, [SECRET]) == []


FAILS_SHOWING_THE_SECRET = """
import os

import pytest

@pytest.mark.dryrun
@pytest.mark.prerequisites
def test_fails_showing_it():
    token = os.environ["CRON_SECRET"]
    print("captured", token)
    assert token == "something else"
"""


def test_a_dry_runs_failure_reports_are_redacted_in_the_terminal_and_junit(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report hooks in-process: the assertion, -l's locals and the captured output of a
    failing dryrun check reach the terminal (-rA) and JUnit XML redacted."""
    monkeypatch.setenv("CRON_SECRET", SECRET)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    pytester.makepyfile(test_fails=FAILS_SHOWING_THE_SECRET)
    result = pytester.runpytest(
        "-m", "dryrun", "-rA", "-l", "--tb=long", "--junitxml=junit.xml",
        "-o", "junit_logging=all", f"--audit-dir={pytester.path / 'audit'}",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()[-2000:]
    terminal = result.stdout.str() + result.stderr.str()
    junit = (pytester.path / "junit.xml").read_text()
    assert "captured [REDACTED]" in terminal and "captured [REDACTED]" in junit
    assert re.search(r"^token +=  *'\[REDACTED\]'$", terminal, re.M), terminal  # -l
    assert pieces_left(terminal, [SECRET]) == []
    assert pieces_left(junit, [SECRET]) == []


def test_the_debug_trace_is_redacted_from_its_first_line(tmp_path: Path) -> None:
    path = tmp_path / "pytestdebug.log"
    dsn = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/app"
    with path.open("w", encoding="utf-8") as debugfile:
        # what helpconfig writes before any plugin is configured: the command line
        debugfile.write(f"versions pytest-9\nargs=('--database-url={dsn}',)\n\n")
        root = TagTracer()
        root.setwriter(debugfile.write)
        assert redact_debug_trace(root, redaction_of(SECRET))
        assert not redact_debug_trace(root, redaction_of(SECRET))  # wrapped once
        trace = root.get("pytest_fixture_setup")
        trace("finish pytest_fixture_setup -->", dsn)
        trace("pytest_make_parametrize_id [hook]", {"val": auth_cases(SECRET)[1]})
        trace("near miss", SECRET[:-1] + "x")
    written = path.read_text()
    assert "args=(" in written and "finish pytest_fixture_setup -->" in written
    assert pieces_left(written, [SECRET, *derived_variants(SECRET)]) == []


def test_the_auth_cases_repr_shows_the_scheme_never_the_token() -> None:
    shown = repr(auth_cases(SECRET))
    assert "AuthCase(name='another scheme (Basic)', authorization='Basic [REDACTED]'" in shown
    assert pieces_left(shown, [SECRET, *derived_variants(SECRET)]) == []


def test_before_the_settings_resolve_the_environment_and_command_line_secrets_are_known() -> None:
    redact = early_redactor(
        {"CRON_SECRET": SECRET, "VERCEL_AUTOMATION_BYPASS_SECRET": BYPASS},
        {"database_url": "postgresql://u:Cli-Db-Password-77@h/app", "cron_url": None},
    ).redact
    text = redact(f"{SECRET} {BYPASS} Cli-Db-Password-77 {SECRET[:-1]}")
    assert pieces_left(text, [SECRET, BYPASS, "Cli-Db-Password-77"]) == []


# -- 3. the DSN read as libpq reads it, refused before libpq sees it ------------------------------

PASSWORD_PIECES = ("Pg1234", "RedTail", "7731", "TailPart", "Tail-99")


@pytest.mark.parametrize(
    ("dsn", "rule", "fix"),
    [
        (
            "host=127.0.0.1 port=5432 dbname=app user=suite password=Pg1234 RedTail-7731",
            "a space in the password value",
            "quote it: password='...'",
        ),
        (
            "host=127.0.0.1 dbname=app user=suite password=Pg1234 RedTail=7731",
            "an unknown keyword right after the password value",
            "quote it: password='...'",
        ),
        (
            "host=127.0.0.1 dbname=app user=suite password='Pg1234 RedTail-7731",
            "the quoted password value is not closed",
            "end it with '",
        ),
        (
            "postgresql://suite:Pg1234@TailPart-99@127.0.0.1:55432/app",
            "more than one '@' in the URL",
            "percent-encode the password ('@' as %40",
        ),
        (
            "postgresql://suite:Pg1234:TailPart-99@127.0.0.1:55432/app",
            "a ':' in the password",
            "percent-encode the password",
        ),
        (
            "postgresql://suite:Pg1234/TailPart-99@127.0.0.1:55432/app",
            "an '@' after a '/', '?' or '#'",
            "percent-encode the password",
        ),
        (
            "postgresql://suite:Pg1234 RedTail@127.0.0.1:55432/app",
            "the URL holds a space or a control character",
            "percent-encode the password",
        ),
        (
            "postgresql://suite:Pg1234@127.0.0.1:55432/app?password=x&RedTail=7731",
            "an unknown query parameter right after the password: an '&' in it?",
            "percent-encode the password",
        ),
    ],
)
def test_an_ambiguous_dsn_is_refused_naming_the_rule_and_the_fix_and_quoting_nothing(
    dsn: str, rule: str, fix: str
) -> None:
    from cron_dryrun.config.settings import SettingsError, resolve_settings

    with pytest.raises(SettingsError) as raised:
        resolve_settings(env={"DATABASE_URL": dsn})
    message = str(raised.value)
    assert message.startswith(f"--database-url / DATABASE_URL: {rule}"), message
    assert fix in message
    assert [p for p in PASSWORD_PIECES if p in message] == []
    assert Redactor(()).redact(message) == message  # no pattern cuts the rule or the fix


@pytest.mark.parametrize(
    "dsn",
    [
        "host=127.0.0.1 dbname=app user=suite password='Pg1234 RedTail-7731'",
        "host=/run/postgresql,127.0.0.1 port=5432,5433 dbname=app password=Pg\\ 1234",
        "postgresql://suite:Pg1234%20RedTail%40x%3A7731%2F@127.0.0.1:55432/app?sslmode=disable",
        "postgresql://suite@[::1]:5432,127.0.0.1:5433/app?host=/tmp&ssl=true",
        "postgresql:///app?host=/run/postgresql&password=Pg1234",
    ],
)
def test_a_dsn_both_readers_take_alike_is_accepted(dsn: str) -> None:
    from cron_dryrun.config.db_url import is_keyword_dsn
    from cron_dryrun.config.dsn_rules import dsn_problem

    assert dsn_problem(dsn, keyword_form=is_keyword_dsn(dsn)) is None


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (
            'missing "=" after "RedTail-7731" in connection info string',
            "libpq could not use DATABASE_URL: a word without '=' (an unquoted space in a value?)",
        ),
        (
            'invalid integer value "TailPart-99@127.0.0.1:55432" for connection option "port"',
            "libpq could not use DATABASE_URL: a value that should be a number (a port?)",
        ),
        (
            'could not translate host name "TailPart-99" to address: Name or service not known',
            "libpq could not use DATABASE_URL: a host name that does not resolve",
        ),
    ],
)
def test_a_libpq_message_that_echoes_the_dsn_becomes_our_sentence(raw: str, shown: str) -> None:
    from cron_dryrun.config.dsn_rules import libpq_message
    from cron_dryrun.target.database import describe_db_error

    message = libpq_message(raw, "08001")
    assert message.startswith(shown)
    assert message.endswith("(libpq's message is not shown: it quotes the value) [SQLSTATE 08001]")
    assert [p for p in PASSWORD_PIECES if p in message] == []
    assert describe_db_error(ValueError(raw)).startswith(f"ValueError: {shown}")


def test_a_server_message_keeps_its_first_line_and_names_the_sqlstate() -> None:
    from cron_dryrun.config.dsn_rules import libpq_message

    raw = 'connection failed: FATAL:  password authentication failed for user "suite"\nDETAIL: x'
    assert libpq_message(raw, "28P01") == (
        'connection failed: FATAL:  password authentication failed for user "suite" '
        "[SQLSTATE 28P01]"
    )


# -- 4. a message about a secret is written around it ---------------------------------------------


@pytest.mark.parametrize("secret", ["shorter", "Shorter1", "random1", "CRON_S", "true", "hard-9"])
def test_the_short_secret_warning_never_holds_a_form_of_the_secret(secret: str) -> None:
    from cron_dryrun.config.settings import weak_secret_warning

    warning = weak_secret_warning("CRON_SECRET", secret)
    assert warning is not None and warning.startswith("warning: ")
    assert f"{len(secret)} " in warning
    redact = Redactor(known_secrets(secret)).redact
    assert redact(warning) == warning  # nothing for the redactor to cut into a hint
    assert REDACTED not in warning


def test_what_is_traced_while_the_redactor_is_fetched_is_redacted_too(tmp_path: Path) -> None:
    root = TagTracer()
    written: list[str] = []
    root.setwriter(written.append)
    inner = root.get("assertion")
    redact = Redactor(known_secrets(SECRET)).redact

    def fetching() -> Callable[[str], str]:
        inner(f"early skip of rewriting module: {SECRET}")  # an import, traced meanwhile
        return redact

    assert redact_debug_trace(root, fetching)
    root.get("hook")("pytest_fixture_setup -->", SECRET)
    assert len(written) == 2 and "pytest_fixture_setup -->" in written[0]
    assert "early skip of rewriting module" in written[1]
    assert pieces_left("".join(written), [SECRET]) == []


@pytest.mark.parametrize("offset", [185, 192, 199])
def test_the_usage_apis_error_body_is_redacted_before_it_is_cut(offset: int) -> None:
    import httpx

    from cron_dryrun.session.usage_fetch import _error_text

    key = "sk-admin-Leak-Hunt-Key-0c9e7a"
    response = httpx.Response(401, text="e" * offset + key + " is not an admin key" * 5)
    text = _error_text(response, key)
    assert text.startswith("e" * 100)
    assert pieces_left(text, [key]) == []


def test_a_long_telemetry_value_is_described_never_cut() -> None:
    from cron_dryrun.rules.checks import reported_writes

    quoted = "x" * 70 + SECRET
    _total, problem = reported_writes({"storedEvents": quoted})
    assert problem == (
        f"telemetry.storedEvents is a JSON str of {len(quoted) + 2} characters (not shown: too "
        "long), expected a whole number of events"
    )
    assert reported_writes({"storedEvents": "many"})[1] == (
        'telemetry.storedEvents is "many", expected a whole number of events'
    )


@pytest.mark.parametrize("command", ["diff", "rollback"])
def test_the_commands_refuse_an_ambiguous_dsn_before_connecting(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cron_dryrun import cli

    dsn = "postgresql://suite:Pg1234@TailPart-99@127.0.0.1:1/app"
    export = tmp_path / "export.csv"
    export.write_text("start_time\n")
    given = (
        ["--since", "2025-10-06T00:00:00Z", "--yes"]
        if command == "rollback"
        else ["--export", str(export), "--no-progress"]
    )
    code = cli.main(
        [command, *given, "--database-url", dsn, "--audit-dir", str(tmp_path / "audit")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"cron-dryrun {command}: DATABASE_URL: more than one '@' in the URL" in err
    assert "percent-encode the password" in err
    assert [p for p in PASSWORD_PIECES if p in err] == []
    assert not (tmp_path / "audit").exists()


def test_a_long_counter_value_is_described_never_cut() -> None:
    from cron_dryrun.rules.telemetry import read_counters

    quoted = "x" * 70 + SECRET
    shown = repr(read_counters({"telemetry": {"storedEvents": quoted}}))
    assert f"a JSON str of {len(quoted) + 2} characters (not shown: too long)" in shown
    assert pieces_left(shown, [SECRET]) == []
