"""The preflight: everything a run can check without triggering the cron, all at once.

In remote mode the plugin runs it at collection, before the first request to
CRON_URL and before any file under the audit folder is written; any problem stops
the run with every problem listed (exit 4, "Nothing was triggered."). On the local
stack it runs when the stack is up, and the prerequisites step reports it either way.

Checked: CRON_SECRET present and well formed; CRON_URL https unless its host is
loopback (decided from the URL alone, no connection); the database answers within a
bounded connect timeout, ``usage_events`` and ``provider_keys`` exist with the columns
the suite reads, and the role may read them; each export path is a readable,
non-empty file or folder whose header the export readers know, and each CSV/TSV export is read
whole (staged in DuckDB, gzip to its end, export_side.stage_for_run): a download cut short (a
last row that stops mid-row, a gzip stream that ends early) is refused before anything is sent,
and parity later compares the staged table instead of reading the file again; the audit folder
can be created and written (a probe file, fsync'd, removed).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cron_dryrun.config.settings import is_loopback_url, secret_problem, weak_secret_warning
from cron_dryrun.parity.formats import (
    expand_export_paths,
    export_file_message,
    read_export_head,
    sniff_export,
)
from cron_dryrun.redaction import without_userinfo
from cron_dryrun.rules.checks import judge_target_scheme

DB_CONNECT_TIMEOUT_S = 10
DB_STATEMENT_TIMEOUT_MS = 10_000
# Columns the suite reads (windows, xmin watch, key count); parity reports metric columns itself.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "usage_events": ("key_id", "model", "window_start", "window_end"),
    "provider_keys": ("id", "provider"),
}
AREAS = ("configuration", "secret", "target", "database", "exports", "audit folder")


@dataclass(frozen=True)
class Preflight:
    """What the preflight found, per area; empty areas passed. ``complete``: every area was
    checked (False when only the secret could be checked, before the local stack is up)."""

    findings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    complete: bool = True

    def problems_in(self, *areas: str) -> tuple[str, ...]:
        return tuple(p for area in areas for p in self.findings.get(area, ()))

    @property
    def problems(self) -> tuple[str, ...]:
        return self.problems_in(*AREAS)

    @property
    def ok(self) -> bool:
        return not self.problems


def failure_message(preflight: Preflight, target: str) -> str:
    """The one configuration error a failed preflight stops the run with."""
    problems = preflight.problems
    lines = "\n".join(f"  - {p}" for p in problems)
    return (
        f"cron-dryrun: the preflight against CRON_URL={target} found {len(problems)} "
        f"problem(s):\n{lines}\n"
        "Nothing was triggered. Fix every problem above, or unset CRON_URL to run on the local stack."
    )


# -- each area ------------------------------------------------------------------------------------


BYPASS_VARIABLE = "VERCEL_AUTOMATION_BYPASS_SECRET"


def check_secret(
    secret: str | None, bypass_secret: str | None = None
) -> tuple[list[str], list[str]]:
    """(problems, warnings) of CRON_SECRET and of the Vercel bypass secret, both sent as header
    values; no message quotes either."""
    problems: list[str] = []
    warnings: list[str] = []
    if secret is not None:
        problem = secret_problem("CRON_SECRET", secret)
        if problem:
            problems.append(problem)
        else:
            warning = weak_secret_warning("CRON_SECRET", secret)
            warnings.extend([warning] if warning else [])
    if bypass_secret is not None:
        problem = secret_problem(BYPASS_VARIABLE, bypass_secret)
        problems.extend([problem] if problem else [])
    return problems, warnings


def check_target(cron_url: str) -> list[str]:
    shown = without_userinfo(cron_url)
    problem = judge_target_scheme(shown, is_loopback_url(cron_url))
    problems = [problem] if problem else []
    if "@" in urlsplit(cron_url).netloc:
        problems.append(
            f"CRON_URL {shown} carries a user and password: the client would send them as Basic "
            "auth in place of the bearer secret; remove them from the URL"
        )
    return problems


def export_file_problem(path: Path) -> str | None:
    """Why the export readers cannot read ``path``, said as the readers say it; None when its
    header is one they know (gzip is read through, as the readers do)."""
    try:
        head, _compression, unreadable = read_export_head(path)
        if unreadable is None and "\x00" in head:
            return f"export file {path}: not a CSV/TSV/JSON export (binary content)"
        fmt = sniff_export(path)
    except OSError as exc:
        return (
            f"export file {path}: cannot be read ({exc.strerror or type(exc).__name__}): "
            "check its permissions"
        )
    problem = fmt.problem(str(path))
    if problem is not None:
        return export_file_message(problem)
    if fmt.kind != "json" and not fmt.metrics:
        return f"export file {path}: its header has no token or request columns (e.g. input_tokens)"
    return export_damage(path)


def export_damage(path: Path) -> str | None:
    """Stage the whole export (parity uses it later) and say whether the file was cut short:
    a local file problem, refused before the cron is triggered, never a red ledger line."""
    from cron_dryrun.parity.export_side import stage_for_run

    try:
        staged = stage_for_run([path]).get(path)
    except OSError as exc:
        return f"export file {path}: cannot be read ({exc}): download the export again"
    if staged is None or staged.damage is None:
        return None
    return (
        f"export file {path}: {staged.damage}: the download was cut short; "
        "download the export again"
    )


def check_exports(paths: Sequence[Path]) -> list[str]:
    if not paths:
        return ["no OpenAI usage export given: pass --openai-export PATH or set OPENAI_EXPORT"]
    problems: list[str] = []
    for path in paths:
        if not path.exists():
            problems.append(
                f"OpenAI usage export not found: {path} (--openai-export / OPENAI_EXPORT)"
            )
            continue
        if path.is_dir():
            try:
                files = expand_export_paths([path])
            except OSError as exc:
                problems.append(
                    f"OpenAI usage export folder {path} cannot be listed ({exc.strerror})"
                )
                continue
            if not files:
                problems.append(
                    f"OpenAI usage export folder {path} holds no export files "
                    "(.csv, .tsv, .txt, .json, .jsonl, each also .gz) (--openai-export / OPENAI_EXPORT)"
                )
            problems.extend(p for p in map(export_file_problem, files) if p)
        elif path.is_file():
            problem = export_file_problem(path)
            if problem:
                problems.append(problem)
        else:
            problems.append(f"OpenAI usage export {path} is neither a file nor a folder")
    return problems


def audit_links(audit_dir: Path) -> list[str]:
    """Every symbolic link below the audit folder, each a problem: the suite would write its
    ledger, summary or notes through it, outside the folder (the root itself may be a link)."""
    problems: list[str] = []
    if not audit_dir.is_dir():
        return problems
    for top, folders, files in os.walk(audit_dir, followlinks=False):
        folders[:] = sorted(f for f in folders if not f.startswith("."))  # .git: not ours
        for name in sorted([*folders, *files]):
            path = Path(top) / name
            if name.startswith(".") or not path.is_symlink():
                continue
            rel = path.relative_to(audit_dir).as_posix()
            problems.append(
                f"{audit_dir / rel} is a symbolic link (to {os.readlink(path)}): the suite never "
                "writes through links under the audit folder; replace it with a real folder or "
                "file, or pass another --audit-dir / AUDIT_DIR"
            )
    return problems


def check_audit_dir(audit_dir: Path) -> list[str]:
    """Create the folder (as the run would), write, fsync and remove a probe file; refuse any
    symbolic link below it (``audit_links``).

    Folders the probe had to create are removed again: a failed preflight leaves nothing.
    """
    audit_dir = Path(audit_dir)
    links = audit_links(audit_dir)
    if links:
        return links
    created: list[Path] = []
    probe = audit_dir / f".cron-dryrun-preflight-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        missing = [p for p in (audit_dir, *audit_dir.parents) if not p.exists()]
        for folder in reversed(missing):
            folder.mkdir()
            created.append(folder)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"cron-dryrun preflight probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        return [
            f"the audit folder {audit_dir} cannot be created or written "
            f"({exc.strerror or type(exc).__name__}): pass a writable --audit-dir / AUDIT_DIR"
        ]
    finally:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
    return []


def check_database(
    dsn: str,
    connect_timeout_s: int = DB_CONNECT_TIMEOUT_S,
    say: Callable[[str], None] = lambda _message: None,
) -> list[str]:
    """The database answers; the app's tables exist with the columns read; the role may read them."""
    import psycopg

    from cron_dryrun.target.database import describe_db_error
    from cron_dryrun.target.db_wake import DatabaseWakeError, wake_database

    try:  # bounded retries up to --db-connect-timeout: a suspended Neon compute wakes slowly
        wake_database(dsn, connect_timeout_s, say=say)
    except DatabaseWakeError as exc:
        return [f"DATABASE_URL: {exc}"]
    try:
        # no server-side prepared statements (PgBouncer in transaction mode)
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=False, prepare_threshold=None)
    except psycopg.Error as exc:
        return [
            f"DATABASE_URL: no connection within {connect_timeout_s}s ({describe_db_error(exc)}): "
            "check host, port, user and password, and that this machine may reach it"
        ]
    try:
        conn.read_only = True
        with conn:
            conn.execute(f"set local statement_timeout = {DB_STATEMENT_TIMEOUT_MS}")
            # pg_catalog, not information_schema: the latter hides tables the role may not read
            rows = conn.execute(
                "select t.name, a.attname::text from unnest(%s::text[]) as t(name) "
                "join pg_attribute a on a.attrelid = to_regclass(t.name) "
                "where a.attnum > 0 and not a.attisdropped",
                (list(REQUIRED_COLUMNS),),
            ).fetchall()
            found: dict[str, set[str]] = {}
            for table, column in rows:
                found.setdefault(table, set()).add(column)
            problems = _schema_problems(found)
            for table in REQUIRED_COLUMNS:
                if table not in found:
                    continue
                readable = conn.execute(
                    "select has_table_privilege(%s, 'SELECT')", (table,)
                ).fetchone()
                if not readable or not readable[0]:
                    problems.append(
                        f"the DATABASE_URL role may not read table {table}: "
                        f"GRANT SELECT ON {table} TO <that role>"
                    )
            return problems
    except psycopg.Error as exc:
        return [f"DATABASE_URL: the schema could not be read ({describe_db_error(exc)})"]
    finally:
        conn.close()


def _schema_problems(found: dict[str, set[str]]) -> list[str]:
    problems = []
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in found:
            problems.append(
                f"table {table} does not exist in DATABASE_URL's database (the app's "
                "SCHEMA_MISSING condition): point DATABASE_URL at the app's database, "
                "or run the app's migrations first"
            )
            continue
        missing = [c for c in columns if c not in found[table]]
        if missing:
            problems.append(
                f"{table} lacks column(s) {', '.join(missing)} (the app's SCHEMA_MISSING "
                "condition): run the app's migrations first"
            )
    return problems


# -- all together ---------------------------------------------------------------------------------


def run_preflight(
    *,
    cron_url: str | None,
    secret: str | None,
    database_dsn: str | None,
    exports: Iterable[Path] | None,
    audit_dir: Path,
    missing_configuration: Sequence[str] = (),
    db_connect_timeout_s: float = DB_CONNECT_TIMEOUT_S,
    say: Callable[[str], None] = lambda _message: None,
    bypass_secret: str | None = None,
) -> Preflight:
    """Every area, each on its own: one area's failure never hides another's."""
    findings: dict[str, tuple[str, ...]] = {"configuration": tuple(missing_configuration)}
    secret_problems, warnings = check_secret(secret, bypass_secret)
    findings["secret"] = tuple(secret_problems)
    if cron_url is not None:
        findings["target"] = tuple(check_target(cron_url))
    if database_dsn is not None:
        timeout = max(1, round(db_connect_timeout_s))
        findings["database"] = tuple(check_database(database_dsn, timeout, say))
    # None: the usage comes from the API (--openai-usage=api), fetched once the run starts
    if exports is not None:
        export_paths = tuple(exports)
        if export_paths or not any("OPENAI_EXPORT" in m for m in missing_configuration):
            findings["exports"] = tuple(check_exports(export_paths))
    findings["audit folder"] = tuple(check_audit_dir(audit_dir))
    return Preflight(findings=findings, warnings=tuple(warnings))


def secret_only(
    secret: str | None, audit_dir: Path | None = None, bypass_secret: str | None = None
) -> Preflight:
    """The part of the preflight that needs no target: before the local stack is up (the
    secrets, and no link under the audit folder)."""
    problems, warnings = check_secret(secret, bypass_secret)
    findings = {"secret": tuple(problems)}
    if audit_dir is not None:
        findings["audit folder"] = tuple(audit_links(Path(audit_dir)))
    return Preflight(findings, tuple(warnings), complete=False)
