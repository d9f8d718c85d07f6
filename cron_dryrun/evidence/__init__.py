"""Evidence: every file the suite writes under audit/.

- ``writer``: the only writer (redacts, atomic, locked); ``paths``: where each file lives.
- the audit-file formats: ``transcripts`` (the smoke log's text), ``smoke_log``, ``summary``,
  ``notes``, ``manifests``, ``ledger``, ``html_report``; ``archive`` packs a complete dry
  run. One run's files are written, in order, by ``cron_dryrun.session.finish``.
- the redaction itself lives in ``cron_dryrun.redaction``.

No pytest, httpx or psycopg here.
"""

from __future__ import annotations

from cron_dryrun.evidence.manifests import (
    BLOCK_SEPARATOR,
    ManifestCheck,
    block_digest,
    check_manifests,
    gate_snapshot_relpath,
    sha256_file,
    verify_manifests,
    write_manifest,
)
from cron_dryrun.evidence.notes import (
    FACTS_END,
    FACTS_START,
    NOTES_TEMPLATE_RELPATH,
    OPERATOR_HEADING,
    OPERATOR_HINT,
    notes_template,
    render_notes,
    render_notes_from_template,
    template_bullets,
    update_notes,
)
from cron_dryrun.evidence.paths import (
    DRY_RUN_DIR,
    GATE_RELPATH,
    LATEST_REPORT_RELPATH,
    LEDGER_RELPATH,
    MANIFEST_DIR,
    MUTABLE_RELPATHS,
    ROLLBACK_LOG_RELPATH,
    SUMMARY_RELPATH,
    iso_z,
    manifest_relpath,
    notes_relpath,
    report_relpath,
    smoke_log_relpath,
    stamp,
)
from cron_dryrun.evidence.summary import (
    SUMMARY_TITLE,
    RunFacts,
    add_summary_entry,
    correct_summary_entry,
    flag_state_of,
    insert_run_entry,
    ledger_line,
    manual_fallback_of,
    render_app_summary_entry,
    render_summary_entry,
    run_block,
    run_end_mark,
    run_start_mark,
    summary_entry_style,
    telemetry_of,
)
from cron_dryrun.evidence.transcripts import format_transcripts
from cron_dryrun.evidence.writer import (
    LOCK_TIMEOUT_S,
    EvidenceError,
    EvidenceWriter,
    dump_json,
    run_secrets,
)
from cron_dryrun.redaction import REDACTED, Redactor, redact_html_report

__all__ = [
    "BLOCK_SEPARATOR",
    "DRY_RUN_DIR",
    "FACTS_END",
    "FACTS_START",
    "GATE_RELPATH",
    "LATEST_REPORT_RELPATH",
    "LEDGER_RELPATH",
    "LOCK_TIMEOUT_S",
    "MANIFEST_DIR",
    "MUTABLE_RELPATHS",
    "NOTES_TEMPLATE_RELPATH",
    "OPERATOR_HEADING",
    "OPERATOR_HINT",
    "REDACTED",
    "ROLLBACK_LOG_RELPATH",
    "SUMMARY_RELPATH",
    "SUMMARY_TITLE",
    "EvidenceError",
    "EvidenceWriter",
    "ManifestCheck",
    "Redactor",
    "RunFacts",
    "add_summary_entry",
    "block_digest",
    "check_manifests",
    "correct_summary_entry",
    "dump_json",
    "flag_state_of",
    "format_transcripts",
    "gate_snapshot_relpath",
    "insert_run_entry",
    "iso_z",
    "ledger_line",
    "manifest_relpath",
    "manual_fallback_of",
    "notes_relpath",
    "notes_template",
    "redact_html_report",
    "render_app_summary_entry",
    "render_notes",
    "render_notes_from_template",
    "render_summary_entry",
    "report_relpath",
    "run_block",
    "run_end_mark",
    "run_secrets",
    "run_start_mark",
    "sha256_file",
    "smoke_log_relpath",
    "stamp",
    "summary_entry_style",
    "telemetry_of",
    "template_bullets",
    "update_notes",
    "verify_manifests",
    "write_manifest",
]
