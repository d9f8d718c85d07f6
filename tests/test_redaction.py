"""Redaction: which values are secret, in which forms, and JSON that keeps its structure."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from cron_dryrun.evidence import EvidenceWriter
from cron_dryrun.redaction import (
    REDACTED,
    SECRET_VARIABLES,
    Redactor,
    derived_variants,
    dsn_passwords,
    known_secrets,
    redact_dsn,
    redact_in_place,
    redact_json_document,
    redact_jsonl_document,
    secrets_from_environment,
)
from cron_dryrun.rules.checks import auth_cases

SECRET = "Cron-Secret-4f9a2b7c1d"


@pytest.mark.parametrize(
    ("dsn", "passwords", "shown"),
    [
        (
            "postgresql://suite:Secr3tPw@db.internal:5432/app",
            {"Secr3tPw"},
            "postgresql://***@db.internal:5432/app",
        ),
        (
            # not percent-encoded: urlsplit would see the password "P" and host "ss"
            "postgresql://suite:P@ss:w/rd%#Q1@127.0.0.1:5432/app",
            {"P@ss:w/rd%#Q1"},
            "postgresql://***@127.0.0.1:5432/app",
        ),
        (
            "postgresql://suite:p%40ss%2Fw0rd@db/app",
            {"p%40ss%2Fw0rd", "p@ss/w0rd"},
            "postgresql://***@db/app",
        ),
        (
            "postgresql:///app?host=/run/postgresql&password=q-Secr3t",
            {"q-Secr3t"},
            "postgresql:///app?host=/run/postgresql&password=***",
        ),
        (
            "host=db.internal dbname=app user=suite password=Secr3tPw",
            {"Secr3tPw"},
            "host=db.internal dbname=app user=suite password=***",
        ),
        (
            "host=db.internal password='two words\\' here' user=suite",
            {"two words' here"},
            "host=db.internal password=*** user=suite",
        ),
    ],
)
def test_the_db_password_is_found_in_every_dsn_form(
    dsn: str, passwords: set[str], shown: str
) -> None:
    assert dsn_passwords(dsn) == passwords
    assert redact_dsn(dsn) == shown
    redact = Redactor(known_secrets(None, dsns=[dsn])).redact
    for password in passwords:
        assert redact(f"error: {password}!") == f"error: {REDACTED}!"
    # the old bug: a one-letter piece of the password redacted every capital P
    assert redact("Parity PASSED") == "Parity PASSED"


def test_every_variant_the_suite_derives_from_the_secret_is_redacted() -> None:
    redact = Redactor(known_secrets(SECRET)).redact
    for case in auth_cases(SECRET):
        if case.authorization is None:
            continue
        token = case.authorization.split(" ", 1)[-1]
        if token in ("Bearer", "undefined", "null", "x" * len(SECRET)):
            continue
        echoed = f'401 {{"message":"invalid token {token}"}}'
        assert token not in redact(echoed), case.name
    assert SECRET.swapcase() in derived_variants(SECRET)
    assert redact(SECRET.lower()) == REDACTED  # a case-insensitive reader sees the secret


def test_encoded_forms_are_redacted() -> None:
    redact = Redactor([SECRET]).redact
    raw = SECRET.encode()
    for form in (
        SECRET,
        quote(SECRET, safe=""),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        raw.hex(),
        raw.hex().upper(),
    ):
        assert redact(f"<{form}>") == f"<{REDACTED}>", form


def test_secret_variables_are_one_place_and_may_list_several() -> None:
    assert "CRON_SECRET" in SECRET_VARIABLES and "PGPASSWORD" in SECRET_VARIABLES
    env = {"PGPASSWORD": "pg-Secr3t-one", "CRON_SECRET": "a,b", "UNRELATED": "x"}
    assert secrets_from_environment(env) == ("a,b", "a", "b", "pg-Secr3t-one")


def test_json_is_redacted_inside_string_values_and_still_parses() -> None:
    redact = Redactor(["true"]).redact
    document = json.dumps(
        {
            "verdict": "GO",
            "required": True,
            "reason": "token true was echoed",
            "headers": {"authorization": "Basic dXNlcjpwdw=="},
        },
        indent=2,
    )
    cleaned = redact_json_document(document, redact)
    assert cleaned is not None
    value = json.loads(cleaned)
    assert value == {
        "verdict": "GO",
        "required": True,
        "reason": f"token {REDACTED} was echoed",
        "headers": {"authorization": f"Basic {REDACTED}"},
    }
    lines = '{"verdict": "GO", "label": "true"}\n{"ok": true}\n'
    assert redact_jsonl_document(lines, redact) == (
        '{"verdict": "GO", "label": "true"}\n{"ok": true}\n'
    )  # a whole value that is the suite's own vocabulary stays
    assert redact_json_document("not json", redact) is None


def test_the_writer_keeps_json_artefacts_parseable_with_a_common_word_secret(
    tmp_path: Path,
) -> None:
    writer = EvidenceWriter(tmp_path, Redactor(["true", "GO"]))
    path = writer.write_json("gate.json", {"verdict": "GO", "promotion_gate": True, "x": "true!"})
    assert json.loads(path.read_text()) == {
        "verdict": "GO",
        "promotion_gate": True,
        "x": f"{REDACTED}!",
    }
    writer.append_jsonl_locked("ledger.jsonl", {"verdict": "GO", "checks": [True]})
    writer.append_jsonl_locked("ledger.jsonl", {"verdict": "NO-GO", "checks": [False]})
    read = [json.loads(line) for line in (tmp_path / "ledger.jsonl").read_text().splitlines()]
    assert [e["verdict"] for e in read] == ["GO", "NO-GO"]


@dataclass
class _Location:
    path: str
    message: str


@dataclass
class _Repr:
    lines: list[str]
    args: list[tuple[str, object]]
    crash: _Location
    chain: list[tuple[_Location, str | None]] = field(default_factory=list)


def test_report_objects_are_redacted_in_place() -> None:
    redact = Redactor([SECRET]).redact
    crash = _Location("t.py", f"AssertionError: got {SECRET}")
    report = _Repr(
        lines=[f"E   assert '{SECRET}' == 'x'"],
        args=[("dsn", f"postgresql://u:{SECRET}@h/db"), ("n", 3)],
        crash=crash,
        chain=[(crash, f"During handling: {SECRET}")],
    )
    assert redact_in_place(report, redact) is report
    text = repr(report)
    assert SECRET not in text and text.count(REDACTED) >= 3
    assert report.args[1] == ("n", 3)


def test_rollback_never_echoes_a_keyword_dsn_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cron_dryrun.cli import main
    from cron_dryrun.target.embedded import free_port

    monkeypatch.setenv("PGPASSWORD", "Pg-Env-Rollback-Pw-42")
    dsn = f"host=127.0.0.1 port={free_port()} dbname=app user=suite password=Kw-Rollback-Pw-9"
    code = main(
        [
            "rollback",
            "--database-url",
            dsn,
            "--since",
            "2025-10-07T00:00:00Z",
            "--dry-run-start",
            "2025-10-06T00:00:00Z",
            "--yes",
            f"--audit-dir={tmp_path}",
            "--db-connect-timeout=1",
        ]
    )
    out = capsys.readouterr()
    assert code == 1
    last = out.err.splitlines()[-1]
    assert last.startswith("cron-dryrun rollback: host=127.0.0.1 ")
    assert "password=***: nothing listens at 127.0.0.1:" in last
    assert "Kw-Rollback-Pw-9" not in out.out + out.err
    assert "Pg-Env-Rollback-Pw-42" not in out.out + out.err


def test_control_characters_are_shown_escaped() -> None:
    from cron_dryrun.redaction import escape_controls, escape_terminal

    hostile = "a\x1b[2J\x1b[Hverdict: GO\x07\x9b1;1H\rover\r\nkept\ttab\n"
    assert escape_controls(hostile) == (
        "a\\x1b[2J\\x1b[Hverdict: GO\\x07\\x9b1;1H\\x0dover\r\nkept\ttab\n"
    )
    assert escape_controls(escape_controls(hostile)) == escape_controls(hostile)
    # on a colour terminal pytest's own colour codes and a progress redraw survive (text from
    # the target was escaped where it entered: reports, reasons, root cause, exchanges)
    line = "\r\x1b[32mPASSED\x1b[0m \x1b[2J\x1b[Hover\r"
    assert escape_terminal(line) == "\r\x1b[32mPASSED\x1b[0m \\x1b[2J\\x1b[Hover\r"
