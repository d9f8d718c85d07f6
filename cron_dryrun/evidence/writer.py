"""The only writer of the audit folder: it redacts every byte (cron_dryrun.redaction),
writes atomically (temp file + fsync + rename), never overwrites with ``write_new`` and
serialises read-modify-write across processes (``update_locked``, ``append_jsonl_locked``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from cron_dryrun.errors import CronDryrunError
from cron_dryrun.redaction import (
    Redactor,
    known_secrets,
    redact_html_report,
    redact_json_document,
    redact_json_value,
    redact_jsonl_document,
)

LOCK_TIMEOUT_S = 60.0


class EvidenceError(CronDryrunError, RuntimeError):
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
        # no write through a link below the audit folder (the preflight refuses them too)
        step = self.audit_dir
        for part in rel.parts:
            step = step / part
            if step.is_symlink():
                raise EvidenceError(
                    f"{step}: is a symlink; the evidence writer does not follow links (none may "
                    "sit under the audit folder)"
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
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                fd = os.open(candidate, flags, 0o644)
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
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0))
        try:
            self._acquire(fd, path.parent)
            try:
                if path.is_symlink():
                    raise EvidenceError(
                        f"{path}: is a symlink; the evidence writer does not follow links"
                    )
                existing = ""
                if path.exists():
                    # newline="": the operator's line endings (CRLF) reach transform as they are
                    with open(path, encoding="utf-8", newline="") as handle:
                        existing = handle.read()
                updated = transform(existing)
                if redact_all:
                    updated = self._redacted_text(path, updated)
                self._atomic_write(path, updated.encode("utf-8"))
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        return path

    def check_updatable(self, relpath: str | Path) -> Path:
        """Raise now what ``update_locked`` would raise for ``relpath`` before writing it: a
        symlink or a folder in its place, a file that cannot be read as UTF-8, a folder that
        cannot be written. Writes nothing (the folder is created, as the update would)."""
        path = self.path(relpath)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            raise EvidenceError(f"{path}: is a symlink; the evidence writer does not follow links")
        if path.exists():
            path.read_text(encoding="utf-8")  # a directory, no permission, or not UTF-8
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "the folder cannot be written", str(path.parent))
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
