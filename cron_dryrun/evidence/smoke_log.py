"""The run's smoke log, appended exchange by exchange as the exchanges happen.

Each exchange is redacted, appended and fsynced before the next request, so a run
killed after a trigger (even by SIGKILL) leaves what was sent and answered. The
file is reserved with O_EXCL (never another run's, never through a symlink).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cron_dryrun.evidence.paths import smoke_log_relpath
from cron_dryrun.evidence.transcripts import format_transcripts
from cron_dryrun.evidence.writer import EvidenceError

if TYPE_CHECKING:
    from cron_dryrun.evidence.writer import EvidenceWriter
    from cron_dryrun.target.client import Transcript


class SmokeLog:
    """``cron-dry-run/smoke-<stamp>.log``, created at the first exchange and only appended to."""

    def __init__(self, writer: EvidenceWriter, run_at: datetime) -> None:
        self.writer = writer
        self.relpath = smoke_log_relpath(run_at)
        self.path: Path | None = None
        self.error: str | None = None  # the first failure; later exchanges are not attempted
        self.exchanges = 0

    def append(self, transcript: Transcript) -> None:
        if self.error is not None:
            return
        try:
            if self.path is None:
                self.path = self.writer.new_path(self.relpath)
                self.relpath = self.writer.relpath(self.path)
            text = ("\n" if self.exchanges else "") + format_transcripts([transcript])
            data = self.writer.redactor.redact_bytes(text.encode("utf-8"))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            self.exchanges += 1
        except (OSError, EvidenceError) as exc:
            self.error = f"{self.relpath} ({type(exc).__name__}: {exc})"
