"""The session's state: the target the checks talk to and everything a run accumulates
for the verdict and the evidence (no pytest, no I/O: the plugin fills it in)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cron_dryrun.config.settings import Settings
from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.rules.gate import CheckOutcome, Verdict

if TYPE_CHECKING:
    from cron_dryrun.evidence import EvidenceWriter
    from cron_dryrun.evidence.smoke_log import SmokeLog
    from cron_dryrun.rules.root_cause import RootCause
    from cron_dryrun.session.preflight import Preflight
    from cron_dryrun.target.client import Transcript


@dataclass
class Target:
    """What the checks talk to: the cron URL and secret, the app DSN, the exports."""

    cron_url: str
    secret: str = field(repr=False)
    database_dsn: str = field(repr=False)
    exports: tuple[Path, ...]
    is_local: bool
    backend: str
    # where --openai-usage=api fetches from, with which admin keys (one per organisation)
    openai_url: str | None = None
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    db_wake_error: str | None = None  # the app database did not answer within --db-connect-timeout


@dataclass
class DryRunState:
    """Everything the session accumulates for the verdict and the evidence."""

    settings: Settings
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # keys this run's manifest, gate snapshot, summary entry, notes block and ledger line
    run_id: str = field(
        default_factory=lambda: (
            f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
        )
    )
    report_reserved: Path | None = None  # this run's dated HTML report name, reserved
    active: bool = False  # dryrun checks were collected: the gate applies
    outcomes: dict[str, CheckOutcome] = field(default_factory=dict)
    # step -> every test id collected for it (before -k/-m/node-id selection): GO needs them all
    collected: dict[str, set[str]] = field(default_factory=dict)
    attachments: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    html_attachments: dict[str, list[str]] = field(default_factory=dict)  # inline HTML evidence
    records: dict[str, Any] = field(default_factory=dict)
    transcripts: list[Transcript] = field(default_factory=list)
    run: RecordedRun | None = None
    rerun: RecordedRun | None = None  # the idempotent rerun, made once, judged by two checks
    target: Target | None = None
    verdict: Verdict | None = None
    config_error: str | None = None  # the preflight failed: nothing is sent, written or recorded
    preflight: Preflight | None = None
    interrupted: bool = False  # SIGTERM or Ctrl-C ended the session
    signalled: int | None = None  # the signal that arrived (session.interrupts)
    requests_sent: int = 0  # counted before each request leaves
    smoke: SmokeLog | None = None  # the smoke log, appended exchange by exchange

    @property
    def triggered(self) -> bool:
        """Whether any request went to the cron: only such runs are recorded."""
        return self.requests_sent > 0 or bool(self.transcripts) or self.run is not None

    @property
    def run_at(self) -> datetime:
        """When the run happened: the recorded trigger's time, else the session's start."""
        return self.run.run_at if self.run else self.started_at

    artefacts: dict[str, Path] = field(default_factory=dict)
    # write-once files the checks wrote (fetched usage pages): they go into the run's manifest
    own_artefacts: list[Path] = field(default_factory=list)
    # secrets the settings do not hold (the local stack's random one); see session.finish.writer_for
    secrets: set[str] = field(default_factory=set, repr=False)
    previous_manual_fallback_windows: int | None = None
    dry_run_status: dict[str, Any] | None = None
    terminal_notes: list[str] = field(default_factory=list)
    root_cause: RootCause | None = None  # the one cause behind several failing checks
    html_temp_path: Path | None = None  # where pytest-html writes before the redacted copy
    html_finished: bool = False
    # the temp folder pytest-html writes into: removed at unconfigure, whatever the run did
    # (collect-only, a refused configuration), unless the copy failed and the note points at it
    html_temp_dir: Path | None = None
    html_temp_kept: bool = False
    # (what the secrets derive from, the writer built for them): see session.finish.writer_for
    _writer: tuple[tuple[object, ...], EvidenceWriter] | None = field(default=None, repr=False)
