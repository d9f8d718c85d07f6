"""Every file written under audit/: redaction, atomic and locked writes, renderers, checksums.

Three layers, usable on their own:

- ``Redactor``: pure text rewriting that removes secrets (no I/O).
- ``EvidenceWriter``: the only way bytes reach the audit folder. It redacts,
  then writes atomically (temp file + fsync + rename); ``update_locked`` and
  ``append_jsonl_locked`` serialise read-modify-write across processes.
- Pure renderers (``format_transcripts``, ``render_summary_entry``,
  ``insert_run_entry``, ``render_notes``, ``render_notes_from_template``) and the
  manifest helpers. A summary in the app's hand-written form gets entries in that
  form, and a folder with ``notes-template.md`` gets notes in its shape
  (``add_summary_entry``, ``update_notes``).

No pytest, httpx or psycopg here: transcripts are duck-typed (``client.Transcript``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import posixpath
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from cron_dryrun.redaction import (
    REDACTED,
    Redactor,
    known_secrets,
    redact_html_report,
    redact_json_document,
    redact_json_value,
    redact_jsonl_document,
)

if TYPE_CHECKING:
    from cron_dryrun.target.client import Transcript

__all__ = ["REDACTED", "Redactor", "redact_html_report"]  # re-exported: their home is redaction


# Where each artefact lives, relative to the audit folder (contract.md section 7).
DRY_RUN_DIR = "cron-dry-run"
SUMMARY_RELPATH = f"{DRY_RUN_DIR}/summary.md"
LEDGER_RELPATH = f"{DRY_RUN_DIR}/ledger.jsonl"
ROLLBACK_LOG_RELPATH = "rollback_log.md"
GATE_RELPATH = "gate.json"
LATEST_REPORT_RELPATH = "report.html"
MANIFEST_DIR = "manifests"
# Files that later runs legitimately rewrite: a manifest of them would fail the
# next verify-evidence, so write_manifest refuses them.
MUTABLE_RELPATHS = frozenset(
    {SUMMARY_RELPATH, LEDGER_RELPATH, ROLLBACK_LOG_RELPATH, GATE_RELPATH, LATEST_REPORT_RELPATH}
)

SUMMARY_TITLE = "# Daily usage cron dry run — summary"
LOCK_TIMEOUT_S = 60.0


class EvidenceError(RuntimeError):
    """An audit file could not be written as required; the message names the file."""


# -- redaction (cron_dryrun.redaction) -------------------------------------------------------------


def run_secrets(
    cron_secret: str | None, *dsns: str | None, admin_keys: Iterable[str] = ()
) -> list[str]:
    """The values a run must never write: the cron secret (and its derived variants), each
    DSN's password in any DSN form, the OpenAI admin keys (OPENAI_ADMIN_KEY / OPENAI_ADMIN_KEYS)."""
    return list(known_secrets(cron_secret, dsns=dsns, extra=admin_keys))


# -- the writer -----------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def _numbered(path: Path, n: int) -> Path:
    """smoke-X.log, smoke-X-2.log, smoke-X-3.log ... (the suffix goes before the extension)."""
    if n == 1:
        return path
    name = path.name
    stem, dot, ext = name.partition(".")
    return path.with_name(f"{stem}-{n}{dot}{ext}")


class EvidenceWriter:
    """The only writer of the audit folder: redacts every byte, writes atomically, locks appends."""

    def __init__(self, audit_dir: Path, redactor: Redactor, lock_timeout_s: float = LOCK_TIMEOUT_S):
        self.audit_dir = Path(audit_dir)
        self.redactor = redactor
        self.lock_timeout_s = lock_timeout_s

    # paths

    def path(self, relpath: str | Path) -> Path:
        """The absolute path of ``relpath``; refuses anything that leaves the audit folder."""
        rel = PurePosixPath(Path(relpath).as_posix())
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise EvidenceError(
                f"{relpath}: evidence paths must be relative and stay inside {self.audit_dir}"
            )
        return self.audit_dir / rel

    def relpath(self, path: str | Path) -> str:
        """``path`` relative to the audit folder, POSIX style (as links and manifests use)."""
        p = Path(path)
        if not p.is_absolute():
            try:
                return p.relative_to(self.audit_dir).as_posix()
            except ValueError:
                return p.as_posix()
        return p.resolve().relative_to(self.audit_dir.resolve()).as_posix()

    # plain writes

    def _redacted(self, path: Path, data: bytes) -> bytes:
        # pytest-html keeps its results in one HTML-escaped JSON attribute: redact it value by
        # value, or a pattern could run across the JSON and the report would not render
        if path.suffix == ".html":
            return redact_html_report(data.decode("utf-8"), self.redactor.redact).encode("utf-8")
        return self._redacted_text(path, data.decode("utf-8", "surrogateescape")).encode(
            "utf-8", "surrogateescape"
        )

    def _redacted_text(self, path: Path, text: str) -> str:
        # JSON artefacts are redacted inside their string values after parsing, so a secret
        # that is also a JSON word (true, null, a key) can never break their structure
        if path.suffix == ".json":
            cleaned = redact_json_document(text, self.redactor.redact)
        elif path.suffix == ".jsonl":
            cleaned = redact_jsonl_document(text, self.redactor.redact)
        else:
            cleaned = None
        return self.redactor.redact(text) if cleaned is None else cleaned

    def write_bytes(self, relpath: str | Path, data: bytes) -> Path:
        path = self.path(relpath)
        self._atomic_write(path, self._redacted(path, data))
        return path

    def write_text(self, relpath: str | Path, text: str) -> Path:
        return self.write_bytes(relpath, text.encode("utf-8"))

    def write_json(self, relpath: str | Path, obj: Any) -> Path:
        return self.write_text(relpath, dump_json(obj))

    def _atomic_write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)  # readers see the old file or the new one, never half of one
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    # files that must never be overwritten

    def new_path(self, relpath_pattern: str | Path) -> Path:
        """Reserve a fresh, empty file: ``relpath_pattern``, else ``<stem>-2.<ext>``, ``-3`` ...

        O_EXCL makes the reservation race-free between processes. Fill it with
        ``write_text(path, ...)``; prefer ``write_new`` which never shows an empty file.
        """
        base = self.path(relpath_pattern)
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            candidate = _numbered(base, n)
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            os.close(fd)
            return candidate
        raise EvidenceError(f"{relpath_pattern}: no free name after 9999 attempts")

    def write_new(self, relpath_pattern: str | Path, data: str | bytes) -> Path:
        """Write a file that never replaces another: a suffix is added when the name is taken.

        The content is written to a temp file first and then hard-linked into
        place; link() fails when the name exists, so a concurrent run can
        neither overwrite nor see a half-written file.
        """
        raw = data.encode("utf-8") if isinstance(data, str) else data
        base = self.path(relpath_pattern)
        raw = self._redacted(base, raw)
        base.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=base.parent, prefix=f".{base.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            for n in range(1, 10_000):
                candidate = _numbered(base, n)
                try:
                    os.link(tmp, candidate)
                except FileExistsError:
                    continue
                _fsync_dir(base.parent)
                return candidate
        finally:
            Path(tmp).unlink(missing_ok=True)
        raise EvidenceError(f"{relpath_pattern}: no free name after 9999 attempts")

    # read-modify-write under a lock

    def update_locked(
        self,
        relpath: str | Path,
        transform: Callable[[str], str],
        *,
        redact_all: bool = True,
    ) -> Path:
        """Read, transform and atomically replace a file while holding an exclusive lock.

        The lock is an flock on the file's folder, not on the file (os.replace swaps
        the file's inode) and not on a sidecar lock file: nothing is left in the
        audit folder, and no pre-made symlink can be followed.

        ``redact_all=False``: the caller redacted what ``transform`` adds, and the
        bytes already in the file (an operator's text) are kept byte for byte.
        """
        path = self.path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._acquire(fd, path.parent)
            try:
                if path.is_symlink():
                    raise EvidenceError(
                        f"{path}: is a symlink; the evidence writer does not follow links"
                    )
                existing = path.read_text(encoding="utf-8") if path.exists() else ""
                updated = transform(existing)
                if redact_all:
                    updated = self._redacted_text(path, updated)
                self._atomic_write(path, updated.encode("utf-8"))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return path

    def jsonl_line(self, obj: Any) -> str:
        """The exact line ``append_jsonl_locked`` appends for ``obj`` (redacted, no newline)."""
        # redacted inside string values, then serialised: the line always parses
        return json.dumps(
            redact_json_value(obj, self.redactor.redact),
            sort_keys=True,
            ensure_ascii=False,
            default=str,
        )

    def append_jsonl_locked(self, relpath: str | Path, obj: Any) -> Path:
        line = self.jsonl_line(obj)

        def append(existing: str) -> str:
            if existing and not existing.endswith("\n"):
                existing += "\n"
            return existing + line + "\n"

        return self.update_locked(relpath, append, redact_all=False)

    def _acquire(self, fd: int, lock_path: Path) -> None:
        """flock with a bound: a stuck writer makes this fail with the lock's name, not hang."""
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise EvidenceError(
                    f"{lock_path}: another process held the lock for over {self.lock_timeout_s:.0f}s; "
                    "is a second dry run still writing to this audit folder?"
                )
            # polling, bounded by the deadline above: flock has no timeout of its own
            time.sleep(delay)
            delay = min(delay * 2, 0.1)


def dump_json(obj: Any) -> str:
    """The audit folder's JSON style: sorted keys, indent 2, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n"


# -- artefact names -------------------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    """20251008T020004Z: the compact UTC stamp of smoke logs and manifests."""
    return _utc(moment).strftime("%Y%m%dT%H%M%SZ")


def smoke_log_relpath(run_at: datetime) -> str:
    return f"{DRY_RUN_DIR}/smoke-{stamp(run_at)}.log"


def notes_relpath(run_at: datetime) -> str:
    return f"{DRY_RUN_DIR}/notes-{_utc(run_at).date().isoformat()}.md"


def diff_relpath(run_at: datetime) -> str:
    """telemetry-audit/2025-10-07T22-44-28Z-cron-diff.json (':' replaced by '-')."""
    return f"telemetry-audit/{_utc(run_at).strftime('%Y-%m-%dT%H-%M-%SZ')}-cron-diff.json"


def report_relpath(run_at: datetime) -> str:
    return f"report-{stamp(run_at)}.html"


def manifest_relpath(run_id: str) -> str:
    return f"{MANIFEST_DIR}/{run_id}.sha256"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_z(moment: datetime) -> str:
    return _utc(moment).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# -- curl -i style transcripts --------------------------------------------------------------------


def _request_target(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += f"?{parts.query}"
    return target, parts.netloc.rsplit("@", 1)[-1]


def format_transcripts(transcripts: Iterable[Transcript]) -> str:
    """The exchanges as ``curl -v``/``-i`` shows them, each under a ``### <label>`` marker line."""
    blocks: list[str] = []
    for t in transcripts:
        target, host = _request_target(t.url)
        lines = [
            f"### {t.label}",
            f"# {t.method} {t.url} at {iso_z(t.started_at)}, {t.elapsed_s:.3f}s",
            f"> {t.method} {target} {t.http_version or 'HTTP/1.1'}",
        ]
        if not any(k.lower() == "host" for k, _ in t.request_headers):
            lines.append(f"> Host: {host}")
        lines.extend(f"> {k}: {v}" for k, v in t.request_headers)
        lines.append(">")
        if t.request_body:
            lines.append(t.request_body.decode("utf-8", "replace"))
        if t.status is None:
            lines.append(f"! transport error, no response: {t.error or 'unknown'}")
        else:
            lines.append(f"< {t.http_version or 'HTTP/1.1'} {t.status} {t.reason}".rstrip())
            lines.extend(f"< {k}: {v}" for k, v in t.response_headers)
            lines.append("<")
            lines.append(f"# body: {t.body_sizes}")
            body = t.response_body.decode("utf-8", "replace")
            lines.append(body.rstrip("\n") if body else "(empty body)")
            if t.body_truncated or t.error:
                lines.append(f"! {t.error or 'body truncated'}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


# -- run facts and the summary entry --------------------------------------------------------------


@dataclass(frozen=True)
class RunFacts:
    """What one run found, in the words of summary.md and the notes. Plain data.

    Artefact paths (smoke_log, diff_report, report) are relative to the audit folder.
    """

    run_at: datetime
    label: str
    target: str
    method: str
    request: str  # one line, e.g. "POST https://host/api/cron/daily-usage -> 200 OK in 1.23s"
    windows_processed: int | None
    expected_windows: int | None
    stored_events: int | None
    updated_events: int | None
    issues_by_code: Mapping[str, int]
    throttling_headers: Mapping[str, str]
    manual_fallback: Mapping[str, int]  # manualFallbackInserts/Updates/Windows/Keys as found
    flag_state: str  # as found: "true", "false", "missing", '"true" (a string)'
    verdict: str  # "GO" or "NO-GO"
    checks: Sequence[tuple[str, str, str]] = ()  # (name, status, reason)
    smoke_log: str | None = None
    diff_report: str | None = None
    report: str | None = None
    body_json: str | None = None
    notable: Sequence[str] = ()
    follow_ups: Sequence[str] = ()
    parity_result: str = "not run"
    trigger_mode: str | None = None  # default: derived from method
    run_id: str | None = None  # keys this run's summary entry, notes block and manifest
    # the one cause behind several failures: (cause, fix, the checks failing because of it)
    root_cause: tuple[str, str, tuple[str, ...]] | None = None
    exchanges: str | None = None  # every exchange's status and duration (watch.exchange_durations)

    @property
    def trigger(self) -> str:
        if self.trigger_mode:
            return self.trigger_mode
        if self.method.upper() == "POST":
            return "manual trigger, POST as the runbook's curl command"
        return f"{self.method.upper()} as the platform scheduler calls it"


def telemetry_of(body: Mapping[str, Any] | None) -> dict[str, Any]:
    """body["telemetry"] when it is an object, else {} (helper for building RunFacts)."""
    telemetry = body.get("telemetry") if isinstance(body, Mapping) else None
    return dict(telemetry) if isinstance(telemetry, Mapping) else {}


def manual_fallback_of(body: Mapping[str, Any] | None) -> dict[str, int]:
    return {k: v for k, v in telemetry_of(body).items() if k.startswith("manualFallback")}


def flag_state_of(body: Mapping[str, Any] | None) -> str:
    """flags.enableDailyUsageWindows as found: true, false, missing, or the odd value shown."""
    flags = body.get("flags") if isinstance(body, Mapping) else None
    if not isinstance(flags, Mapping) or "enableDailyUsageWindows" not in flags:
        return "missing"
    value = flags["enableDailyUsageWindows"]
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{json.dumps(value)} (not a JSON boolean)"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def _num(value: int | None) -> str:
    return "unknown" if value is None else str(value)


def _issues(issues: Mapping[str, int]) -> str:
    if not issues:
        return "none"
    return ", ".join(f"`{_one_line(k)}`: {_one_line(v)}" for k, v in sorted(issues.items()))


def _headers(headers: Mapping[str, str]) -> str:
    if not headers:
        return "none"
    return ", ".join(f"`{_one_line(k)}: {_one_line(v)}`" for k, v in headers.items())


def _manual_fallback(values: Mapping[str, int]) -> str:
    if not values:
        return "not reported"
    text = ", ".join(f"{k} {v}" for k, v in sorted(values.items()))
    used = any(isinstance(v, int | float) and v > 0 for v in values.values())
    return text + (" (writes went through the manual fallback path)" if used else "")


def _verdict_line(facts: RunFacts) -> str:
    bad = [c for c in facts.checks if c[1] != "passed"]
    if not bad:
        return f"**{facts.verdict}**"
    if facts.root_cause is not None:
        cause, fix, consequences = facts.root_cause
        others = [c for c in bad if c[0] not in consequences]
        rest = "; ".join(
            f"{name} {status}" + (f": {_one_line(reason)}" if reason else "")
            for name, status, reason in others
        )
        return (
            f"**{facts.verdict}**: root cause: {_one_line(cause)}; fix: {_one_line(fix)} "
            f"(failing because of it: {', '.join(consequences)})"
            + (f"; also {rest}" if rest else "")
        )
    listed = "; ".join(
        f"{name} {status}" + (f": {_one_line(reason)}" if reason else "")
        for name, status, reason in bad
    )
    return f"**{facts.verdict}** ({listed})"


def _link(from_dir: str, target: str, text: str) -> str:
    rel = posixpath.relpath(target, from_dir) if from_dir else target
    return f"[{text}]({quote(rel, safe='/.-_~')})"


def _fenced(body: str, lang: str) -> str:
    """A code fence longer than any backtick run in ``body`` (a body cannot close it early)."""
    longest = max((len(run) for run in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body.rstrip()}\n{fence}\n"


def _pretty_body(body_json: str | None) -> str:
    if body_json is None:
        return "(no JSON body)"
    try:
        return json.dumps(json.loads(body_json), indent=2, ensure_ascii=False)
    except ValueError:
        return body_json


def _artefact_links(facts: RunFacts, from_dir: str) -> str:
    links = []
    if facts.smoke_log:
        links.append(_link(from_dir, facts.smoke_log, "smoke log"))
    if facts.diff_report:
        links.append(_link(from_dir, facts.diff_report, "diff JSON"))
    if facts.report:
        links.append(_link(from_dir, facts.report, "HTML report"))
    return " · ".join(links) if links else "none"


def run_start_mark(run_id: str) -> str:
    return f"<!-- cron-dryrun:run {run_id} -->"


def run_end_mark(run_id: str) -> str:
    return f"<!-- cron-dryrun:end {run_id} -->"


def run_block(text: str, run_id: str) -> str | None:
    """The block a run wrote into summary.md or a notes file, markers included; None if absent."""
    start = text.find(run_start_mark(run_id) + "\n")
    if start < 0:
        return None
    end_mark = run_end_mark(run_id) + "\n"
    end = text.find(end_mark, start)
    return text[start : end + len(end_mark)] if end >= 0 else None


def ledger_line(text: str, run_id: str) -> str | None:
    """The ledger line of ``run_id`` (without its newline); None if absent."""
    needle = f'"run_id": {json.dumps(run_id)}'
    for line in text.splitlines():
        if needle in line:
            return line
    return None


def render_summary_entry(facts: RunFacts, style: str = "suite") -> str:
    """One summary.md entry: ``#### <UTC time> — <label>``, the bullets, the JSON body.

    ``style="app"``: the form of the app's hand-written entries instead
    (``render_app_summary_entry``; ``summary_entry_style`` tells which a summary uses).
    With a run id, the entry is framed by ``<!-- cron-dryrun:run/end <id> -->``
    so its manifest can checksum exactly these bytes (HTML comments: invisible
    when the Markdown is rendered).
    """
    body = render_app_summary_entry(facts) if style == "app" else _summary_entry_body(facts)
    if not facts.run_id:
        return body
    return f"{run_start_mark(facts.run_id)}\n{body.rstrip()}\n{run_end_mark(facts.run_id)}\n"


# an entry heading as the app's hand-written summary has them: #### 2025-10-08T20:04Z (Smoke Test)
_APP_ENTRY = re.compile(r"^####[ \t]+\d{4}-\d\d-\d\dT\d\d:\d\dZ[ \t]+\(.*\)[ \t]*$")


def summary_entry_style(existing: str) -> str:
    """ "app" when the summary's entries are the app's hand-written form, else "suite"."""
    lines = existing.splitlines()
    plain = _outside_fences(lines)
    if any(plain[i] and _APP_ENTRY.match(line) for i, line in enumerate(lines)):
        return "app"
    return "suite"


def render_app_summary_entry(facts: RunFacts) -> str:
    """An entry in the app's own form: ``#### <time to the minute> (<label>)`` and its seven
    plain bullets (Request, Windows processed, Updated events, Issues by code, Retry-After
    headers, Notes, Artefacts), then the JSON body; what else the suite knows goes into
    Notes."""
    expected = "unknown" if facts.expected_windows is None else str(facts.expected_windows)
    minute = _utc(facts.run_at).strftime("%Y-%m-%dT%H:%MZ")
    notes = [
        f"cron-dryrun verdict {_verdict_line(facts).replace('**', '')}",
        f"run time {iso_z(facts.run_at)}",
        f"flag state `flags.enableDailyUsageWindows` {_one_line(facts.flag_state)}",
        f"stored events {_num(facts.stored_events)}",
        f"manual fallback {_manual_fallback(facts.manual_fallback)}",
        f"target {_one_line(facts.target)}",
        *([f"exchanges {_one_line(facts.exchanges)}"] if facts.exchanges else []),
        f"parity {_one_line(facts.parity_result)}",
        *(_one_line(n) for n in facts.notable),
        *(f"follow-up: {_one_line(f)}" for f in facts.follow_ups),
    ]
    label = _one_line(facts.label).replace("(", "[").replace(")", "]")
    lines = [
        f"#### {minute} ({label})",
        f"- Request: {_one_line(facts.request)}",
        f"- Windows processed: {_num(facts.windows_processed)} (expected {expected})",
        f"- Updated events: {_num(facts.updated_events)}",
        f"- Issues by code: {_issues(facts.issues_by_code)}",
        f"- Retry-After headers: {_headers(facts.throttling_headers)}",
        f"- Notes: {'; '.join(notes)}",
        f"- Artefacts: {_artefact_links(facts, DRY_RUN_DIR)}",
        "",
        _fenced(_pretty_body(facts.body_json), "json"),
    ]
    return "\n".join(lines)


def _summary_entry_body(facts: RunFacts) -> str:
    notes = [*facts.notable, *(f"follow-up: {f}" for f in facts.follow_ups)]
    expected = "unknown" if facts.expected_windows is None else str(facts.expected_windows)
    lines = [
        f"#### {iso_z(facts.run_at)} — {_one_line(facts.label)}",
        "",
        f"- **Request:** {_one_line(facts.request)}",
        f"- **Target:** {_one_line(facts.target)}",
        *([f"- **Exchanges:** {_one_line(facts.exchanges)}"] if facts.exchanges else []),
        f"- **Windows processed:** {_num(facts.windows_processed)} (expected {expected})",
        f"- **Stored events:** {_num(facts.stored_events)}",
        f"- **Updated events:** {_num(facts.updated_events)}",
        f"- **Issues by code:** {_issues(facts.issues_by_code)}",
        f"- **Retry-After/throttling headers:** {_headers(facts.throttling_headers)}",
        f"- **Manual fallback:** {_manual_fallback(facts.manual_fallback)}",
        f"- **Flag state:** `flags.enableDailyUsageWindows` {_one_line(facts.flag_state)}",
        f"- **Verdict:** {_verdict_line(facts)}",
        f"- **Notes:** {'; '.join(_one_line(n) for n in notes) if notes else 'none'}",
        f"- **Artefacts:** {_artefact_links(facts, DRY_RUN_DIR)}",
        "",
        _fenced(_pretty_body(facts.body_json), "json"),
    ]
    return "\n".join(lines)


_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_RUNS_HEADING = re.compile(r"^##[ \t]+Runs[ \t]*$")
_SECTION_END = re.compile(r"^#{1,2}[ \t]")
_ENTRY_HEADING = re.compile(r"^#{3,4}[ \t]")


def _outside_fences(lines: list[str]) -> list[bool]:
    """For each line: True when it is not inside a fenced code block (JSON bodies are)."""
    result = []
    fence: str | None = None
    for line in lines:
        m = _FENCE.match(line)
        if fence is None:
            result.append(True)
            if m:
                fence = m.group(1)
        else:
            result.append(False)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
    return result


def insert_run_entry(existing: str, entry: str) -> str:
    """``entry`` at the top of ``## Runs`` (newest first); every other byte stays as it was.

    "Top" means before the first ``###``/``####`` entry heading of the section,
    so an operator's intro text under ``## Runs`` stays above the entries.
    The section (or the whole file, with a title) is created when missing.
    """
    entry = entry if entry.endswith("\n") else entry + "\n"
    if not existing.strip():
        return f"{SUMMARY_TITLE}\n\n## Runs\n\n{entry}"
    lines = existing.splitlines(keepends=True)
    plain = _outside_fences(lines)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    heading = next(
        (
            i
            for i, line in enumerate(lines)
            if plain[i] and _RUNS_HEADING.match(line.rstrip("\r\n"))
        ),
        None,
    )
    if heading is None:
        sep = "" if existing.endswith("\n\n") else ("\n" if existing.endswith("\n") else "\n\n")
        return f"{existing}{sep}## Runs\n\n{entry}"
    pos = None
    for i in range(heading + 1, len(lines)):
        if not plain[i]:
            continue
        if _ENTRY_HEADING.match(lines[i]) or _RUN_MARK.match(lines[i].rstrip("\r\n")):
            return existing[: offsets[i]] + entry + "\n" + existing[offsets[i] :]
        if _SECTION_END.match(lines[i]):
            pos = i
            break
    # no entry yet: at the end of the section, after any intro text
    cut = offsets[pos] if pos is not None else len(existing)
    before, after = existing[:cut], existing[cut:]
    lead = "" if before.endswith("\n\n") else ("\n" if before.endswith("\n") else "\n\n")
    return before + lead + entry + ("\n" if after else "") + after


# -- notes-<date>.md ------------------------------------------------------------------------------

FACTS_START = "<!-- cron-dryrun:facts:start (generated: rewritten by each run of the day) -->"
FACTS_END = "<!-- cron-dryrun:facts:end -->"
_RUN_MARK = re.compile(r"^<!-- cron-dryrun:run (?P<key>\S+) -->$", re.M)
OPERATOR_HEADING = "## Operator comments"
OPERATOR_HINT = (
    "<!-- Write below; cron-dryrun keeps this section verbatim when it rewrites the facts. -->"
)


def _notes_key(facts: RunFacts) -> str:
    return facts.run_id or iso_z(facts.run_at)


def _notes_block(facts: RunFacts) -> str:
    key = _notes_key(facts)
    follow = [_one_line(f) for f in facts.follow_ups] or ["none"]
    notable = [_one_line(n) for n in facts.notable] or ["none"]
    expected = "unknown" if facts.expected_windows is None else str(facts.expected_windows)
    lines = [
        f"<!-- cron-dryrun:run {key} -->",
        f"### Run {key} — {_one_line(facts.label)}",
        "",
        f"- Run timestamp: {key}",
        f"- Target: {_one_line(facts.target)}",
        f"- Trigger mode: {_one_line(facts.trigger)}",
        f"- Flag state: flags.enableDailyUsageWindows {_one_line(facts.flag_state)}",
        f"- Windows processed: {_num(facts.windows_processed)} (expected {expected})",
        f"- Updated events: {_num(facts.updated_events)}",
        f"- Issues by code: {_issues(facts.issues_by_code)}",
        f"- Retry-After headers: {_headers(facts.throttling_headers)}",
        f"- Manual fallback usage: {_manual_fallback(facts.manual_fallback)}",
        "- Notable logs:",
        *(f"  - {n}" for n in notable),
        f"- Parity diff result: {_one_line(facts.parity_result)}",
        "- Follow-ups:",
        *(f"  - [ ] {f}" if f != "none" else "  - none" for f in follow),
        f"- Verdict: {_verdict_line(facts)}",
        f"- Artefacts: {_artefact_links(facts, DRY_RUN_DIR)}",
        *([run_end_mark(key)] if facts.run_id else []),
        "",
    ]
    return "\n".join(lines)


def _split_blocks(region: str) -> list[tuple[str, str]]:
    marks = list(_RUN_MARK.finditer(region))
    blocks = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(region)
        blocks.append((m.group("key"), region[m.start() : end].rstrip("\n") + "\n"))
    return blocks


def render_notes(
    facts: RunFacts, existing: str | None, redact: Callable[[str], str] = lambda t: t
) -> str:
    """notes-<date>.md with this run's facts; everything outside the generated region is kept.

    One facts block per run of the day, newest first (a rerun of the same
    run time replaces its block). The operator comments, and anything else
    outside the markers, are kept byte for byte. A hand-written notes file
    without markers becomes the operator comments of the generated one.
    """
    block = redact(_notes_block(facts))
    key = _notes_key(facts)
    if existing and FACTS_START in existing and FACTS_END in existing.split(FACTS_START, 1)[1]:
        before, rest = existing.split(FACTS_START, 1)
        region, after = rest.split(FACTS_END, 1)
        blocks = [(k, b) for k, b in _split_blocks(region) if k != key]
        blocks = sorted([(key, block), *blocks], key=lambda kb: kb[0], reverse=True)
        body = "\n".join(b for _, b in blocks)
        return f"{before}{FACTS_START}\n{body}{FACTS_END}{after}"
    day = _utc(facts.run_at).date().isoformat()
    comments = existing if existing else ""
    if comments and not comments.endswith("\n"):
        comments += "\n"
    head = redact(
        f"# Operator notes — {day}\n\nDaily usage cron dry run, {_one_line(facts.target)}.\n\n"
    )
    return (
        f"{head}{FACTS_START}\n{block}{FACTS_END}\n\n"
        f"{OPERATOR_HEADING}\n\n{OPERATOR_HINT}\n\n{comments}"
    )


NOTES_TEMPLATE_RELPATH = f"{DRY_RUN_DIR}/notes-template.md"
_BOLD_BULLET = re.compile(r"^- \*\*(?P<label>[^*]+)\*\*:[ \t]*(?P<value>.*)$")


def template_bullets(template: str) -> list[str]:
    """The bold-label bullets (``- **Label**: [...]``) of a notes template, in order."""
    return [line for line in template.splitlines() if _BOLD_BULLET.match(line)]


def _template_values(facts: RunFacts) -> dict[str, str]:
    """The template's bold labels (lower case) -> this run's value."""
    expected = "unknown" if facts.expected_windows is None else str(facts.expected_windows)
    parity = _one_line(facts.parity_result)
    if facts.diff_report:
        parity += f" ({_link(DRY_RUN_DIR, facts.diff_report, 'diff JSON')})"
    return {
        "run timestamp (utc)": iso_z(facts.run_at),
        "trigger mode": f"{_one_line(facts.trigger)} (cron-dryrun)",
        "feature flag state": f"flags.enableDailyUsageWindows {_one_line(facts.flag_state)}",
        "windows processed": f"{_num(facts.windows_processed)} (expected {expected})",
        "updated events": _num(facts.updated_events),
        "issues by code": _issues(facts.issues_by_code),
        "retry-after headers": _headers(facts.throttling_headers),
        "manual fallback usage": _manual_fallback(facts.manual_fallback),
        "notable logs": "; ".join(_one_line(n) for n in facts.notable) or "none",
        "parity diff result": parity,
        "follow-ups": "; ".join(_one_line(f) for f in facts.follow_ups) or "none",
    }


def _template_block(facts: RunFacts, bullets: Sequence[str]) -> str:
    """One run's block: the template's bold-label bullets with this run's values, keyed
    and framed by the run's markers like the built-in block."""
    key = _notes_key(facts)
    values = _template_values(facts)
    lines = [run_start_mark(key), f"### Run {key} — {_one_line(facts.label)}", ""]
    for bullet in bullets:
        m = _BOLD_BULLET.match(bullet)
        if m is None:
            continue
        value = values.get(m.group("label").strip().lower(), m.group("value"))
        lines.append(f"- **{m.group('label')}**: {value}")
    lines.append(f"- **Target**: {_one_line(facts.target)}")
    lines.append(f"- **Verdict**: {_verdict_line(facts).replace('**', '')}")
    lines.append(f"- **Artefacts**: {_artefact_links(facts, DRY_RUN_DIR)}")
    if facts.run_id:
        lines.append(run_end_mark(key))
    lines.append("")
    return "\n".join(lines)


def render_notes_from_template(
    facts: RunFacts,
    existing: str | None,
    template: str,
    redact: Callable[[str], str] = lambda text: text,
) -> str:
    """notes-<date>.md in the shape of the app's ``notes-template.md``.

    The template's bold-label bullets are filled in, one block per run of the day inside
    the generated markers (newest first, keyed by run id); the rest of the template (its
    title, its "operator comments" checklist) is kept once, and everything an operator
    wrote outside the markers is kept byte for byte on reruns. Only what this run adds is
    redacted (``redact``).
    """
    block = redact(_template_block(facts, template_bullets(template)))
    key = _notes_key(facts)
    if existing and FACTS_START in existing and FACTS_END in existing.split(FACTS_START, 1)[1]:
        before, rest = existing.split(FACTS_START, 1)
        region, after = rest.split(FACTS_END, 1)
        blocks = [(k, b) for k, b in _split_blocks(region) if k != key]
        blocks = sorted([(key, block), *blocks], key=lambda kb: kb[0], reverse=True)
        body = "\n".join(b for _, b in blocks)
        return f"{before}{FACTS_START}\n{body}{FACTS_END}{after}"
    day = _utc(facts.run_at).date().isoformat()
    out: list[str] = []
    placed = False
    for line in template.splitlines():
        if _BOLD_BULLET.match(line):
            if not placed:
                out.append(f"{FACTS_START}\n{block}{FACTS_END}")
                placed = True
            continue
        if line.startswith("#") and "(Template)" in line:
            out.append(line.replace("(Template)", f"— {day}"))
        elif line.startswith(">"):
            continue  # the template's instruction to copy it: done
        else:
            out.append(line)
    text = "\n".join(out)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    text += "\n"
    if existing:  # a hand-written notes file without markers: kept, as the operator comments
        text += f"\n{existing if existing.endswith(chr(10)) else existing + chr(10)}"
    return text


# -- manifests ------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


BLOCK_SEPARATOR = "#run="


def block_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_manifest(
    writer: EvidenceWriter,
    run_id: str,
    paths: Iterable[str | Path],
    blocks: Iterable[tuple[str, str]] = (),
) -> Path:
    """manifests/<run-id>.sha256 in sha256sum format, paths relative to the audit folder.

    Only a run's own, never-rewritten artefacts belong here (smoke log, diff
    JSON, dated report, ...); summary.md and friends change with every run.
    ``blocks``: (file, text) of what this run appended to such a file (summary
    entry, notes block, ledger line), listed as ``<sha256>  <file>#run=<run-id>``
    and found again by its run-id markers. An existing manifest is never
    replaced: a suffix is added.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", run_id):
        raise EvidenceError(f"run id {run_id!r}: expected letters, digits, '.', '_' or '-'")
    lines = []
    seen: set[str] = set()
    for item in paths:
        rel = writer.relpath(item)
        if rel in seen:
            continue
        seen.add(rel)
        if rel in MUTABLE_RELPATHS or re.fullmatch(rf"{DRY_RUN_DIR}/notes-[0-9-]+\.md", rel):
            raise EvidenceError(
                f"{rel} is rewritten by later runs, so a checksum of it would fail verify-evidence "
                "after the next run; list only this run's own artefacts"
            )
        path = writer.path(rel)
        if not path.is_file():
            raise EvidenceError(f"{rel}: cannot checksum a file that does not exist")
        digest = sha256_file(path)
        lines.append(f"{digest}  {rel}\n")
        # the team's convention: a .sha256 beside each archived artefact, `sha256sum -c` ready
        writer.write_text(f"{rel}.sha256", f"{digest}  {path.name}\n")
    for rel, text in blocks:
        lines.append(f"{block_digest(text)}  {rel}{BLOCK_SEPARATOR}{run_id}\n")
    return writer.write_new(manifest_relpath(run_id), "".join(lines))


@dataclass(frozen=True)
class ManifestCheck:
    manifests: int
    files: int
    problems: tuple[str, ...]


_MANIFEST_LINE = re.compile(r"^(?P<hex>[0-9a-fA-F]{64}) [ *](?P<path>.+)$")


def check_manifests(audit_dir: Path) -> ManifestCheck:
    """Every manifests/*.sha256 under ``audit_dir`` checked; each problem names its file."""
    audit_dir = Path(audit_dir)
    folder = audit_dir / MANIFEST_DIR
    manifests = sorted(folder.glob("*.sha256")) if folder.is_dir() else []
    if not manifests:
        return ManifestCheck(0, 0, (f"no manifests in {folder}: nothing to verify",))
    problems: list[str] = []
    files = 0
    root = audit_dir.resolve()
    listed: set[Path] = set()  # checked through a manifest: its .sha256 beside it adds nothing
    for manifest in manifests:
        name = f"{MANIFEST_DIR}/{manifest.name}"
        text = manifest.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            m = _MANIFEST_LINE.match(line)
            if m is None:
                problems.append(f"{name} line {number}: not a sha256sum line: {line[:80]!r}")
                continue
            rel = m.group("path")
            files += 1
            if BLOCK_SEPARATOR in rel:
                problems.extend(_check_block(audit_dir, rel, m.group("hex").lower(), name))
                continue
            target = (audit_dir / rel).resolve()
            listed.add(target)
            if root not in target.parents:
                problems.append(f"{rel}: listed in {name} but outside the audit folder")
            elif not target.is_file():
                problems.append(f"{rel}: missing (listed in {name})")
            else:
                actual = sha256_file(target)
                if actual != m.group("hex").lower():
                    problems.append(
                        f"{rel}: changed (listed in {name}; sha256 expected {m.group('hex')[:12]}…, "
                        f"found {actual[:12]}…)"
                    )
    for beside in sorted(audit_dir.rglob("*.sha256")):
        if beside.parent.resolve() == folder.resolve():
            continue  # the manifests themselves, checked above
        name = str(beside.relative_to(audit_dir))
        for line in beside.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _MANIFEST_LINE.match(line)
            if m is None:
                if line.strip():
                    problems.append(f"{name}: not a sha256sum line: {line[:80]!r}")
                continue
            target = beside.parent / m.group("path")
            if target.resolve() in listed:
                continue
            rel = (
                str(target.relative_to(audit_dir))
                if root in target.resolve().parents
                else m.group("path")
            )
            files += 1
            if not target.is_file():
                problems.append(f"{rel}: missing (listed in {name})")
            elif sha256_file(target) != m.group("hex").lower():
                problems.append(f"{rel}: changed (listed in {name})")
    problems.extend(_check_latest_gate(audit_dir))
    return ManifestCheck(len(manifests), files, tuple(problems))


def _check_block(audit_dir: Path, listed: str, digest: str, manifest: str) -> list[str]:
    """One appended block (summary entry, notes block, ledger line) against its checksum."""
    rel, _, run_id = listed.partition(BLOCK_SEPARATOR)
    path = audit_dir / rel
    what = f"{rel}: the block of run {run_id}"
    if not path.is_file() or path.is_symlink():
        return [f"{what}: {rel} missing (listed in {manifest})"]
    text = path.read_text(encoding="utf-8", errors="surrogateescape")
    find = ledger_line if rel.endswith(".jsonl") else run_block
    found = find(text, run_id)
    if found is None:
        return [f"{what}: missing (listed in {manifest})"]
    if block_digest(found) != digest:
        return [f"{what}: changed (listed in {manifest})"]
    return []


def gate_snapshot_relpath(run_id: str) -> str:
    return f"gate-{run_id}.json"


def _check_latest_gate(audit_dir: Path) -> list[str]:
    """gate.json is the latest run's gate-<run-id>.json, byte for byte (that one is in a manifest)."""
    latest = audit_dir / GATE_RELPATH
    if not latest.is_file():
        return []
    try:
        run_id = json.loads(latest.read_text(encoding="utf-8")).get("run_id")
    except (ValueError, AttributeError):
        return [f"{GATE_RELPATH}: not valid JSON"]
    if not isinstance(run_id, str):
        return []  # written before per-run snapshots existed
    snapshot = audit_dir / gate_snapshot_relpath(run_id)
    if not snapshot.is_file():
        return [f"{GATE_RELPATH}: its run's snapshot {snapshot.name} is missing"]
    if snapshot.read_bytes() != latest.read_bytes():
        return [f"{GATE_RELPATH}: changed (it differs from {snapshot.name}, its run's snapshot)"]
    return []


def verify_manifests(audit_dir: Path) -> list[str]:
    """The problems of ``check_manifests``: empty when every listed file is present and unchanged."""
    return list(check_manifests(audit_dir).problems)


# -- one run's evidence, end to end ---------------------------------------------------------------


def add_summary_entry(writer: EvidenceWriter, facts: RunFacts) -> str:
    """This run's entry at the top of summary.md's ``## Runs``; returns the entry as written.

    The entry takes the form the file's entries already have (the app's hand-written
    ``#### <time> (<label>)`` form, else the suite's), decided under the lock. Only the
    entry is redacted: every byte already in the file stays as it was.
    """
    written: list[str] = []

    def add(old: str) -> str:
        entry = writer.redactor.redact(render_summary_entry(facts, summary_entry_style(old)))
        written.append(entry)
        return insert_run_entry(old, entry)

    writer.update_locked(SUMMARY_RELPATH, add, redact_all=False)
    return written[-1]


def notes_template(writer: EvidenceWriter) -> str | None:
    """``cron-dry-run/notes-template.md`` when it exists and has bold-label bullets to fill."""
    path = writer.path(NOTES_TEMPLATE_RELPATH)
    if not path.is_file() or path.is_symlink():
        return None
    template = path.read_text(encoding="utf-8", errors="replace")
    return template if template_bullets(template) else None


def update_notes(writer: EvidenceWriter, facts: RunFacts) -> Path:
    """This run's block in the day's notes: in the shape of ``notes-template.md`` when the
    folder has one, else the built-in layout. Only the block is redacted."""
    template = notes_template(writer)
    redact = writer.redactor.redact
    rel = notes_relpath(facts.run_at)
    if template is None:
        return writer.update_locked(
            rel, lambda old: render_notes(facts, old or None, redact), redact_all=False
        )
    return writer.update_locked(
        rel,
        lambda old: render_notes_from_template(facts, old or None, template, redact),
        redact_all=False,
    )


@dataclass(frozen=True)
class RunEvidence:
    """Where one run's evidence went, relative to the audit folder."""

    facts: RunFacts
    smoke_log: str | None
    diff_report: str | None
    summary: str
    notes: str
    manifest: str | None
    written: tuple[str, ...] = field(default=())


def write_run_evidence(
    writer: EvidenceWriter,
    facts: RunFacts,
    transcripts: Sequence[Transcript],
    *,
    diff: Any | None = None,
    extra_artefacts: Iterable[str | Path] = (),
    run_id: str | None = None,
) -> RunEvidence:
    """Smoke log, diff JSON, summary entry, notes, manifest: in that order, each on its own.

    ``facts.smoke_log``/``diff_report`` are filled with the paths actually
    written (a suffix when a run in the same second came first). Write the
    dated HTML report before calling and pass it in ``extra_artefacts`` (and
    ``facts.report``) to have it checksummed. gate.json and the ledger line
    are separate calls: ``writer.write_json(GATE_RELPATH, ...)``,
    ``ledger.append_entry(writer, ...)``.
    """
    smoke = None
    if transcripts:
        smoke = writer.relpath(
            writer.write_new(smoke_log_relpath(facts.run_at), format_transcripts(transcripts))
        )
        facts = replace(facts, smoke_log=smoke)
    diff_rel = facts.diff_report
    if diff is not None:
        diff_rel = writer.relpath(writer.write_new(diff_relpath(facts.run_at), dump_json(diff)))
        facts = replace(facts, diff_report=diff_rel)
    add_summary_entry(writer, facts)
    notes = writer.relpath(update_notes(writer, facts))
    own = [p for p in (smoke, diff_rel if diff is not None else None) if p]
    own.extend(writer.relpath(p) for p in extra_artefacts)
    manifest = None
    if own:
        rid = run_id or (
            PurePosixPath(smoke).stem.removeprefix("smoke-") if smoke else stamp(facts.run_at)
        )
        manifest = writer.relpath(write_manifest(writer, rid, own))
    return RunEvidence(
        facts=facts,
        smoke_log=smoke,
        diff_report=diff_rel,
        summary=SUMMARY_RELPATH,
        notes=notes,
        manifest=manifest,
        written=tuple(p for p in (smoke, diff_rel, SUMMARY_RELPATH, notes, manifest) if p),
    )
