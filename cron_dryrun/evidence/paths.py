"""Where each artefact lives in the audit folder (contract.md section 7), and the names
of the dated ones (smoke log, notes, diff, report, manifest). Pure.
"""

from __future__ import annotations

from datetime import UTC, datetime

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


# -- artefact names -------------------------------------------------------------------------------


def stamp(moment: datetime) -> str:
    """20251008T020004Z: the compact UTC stamp of smoke logs and manifests."""
    return _utc(moment).strftime("%Y%m%dT%H%M%SZ")


def smoke_log_relpath(run_at: datetime) -> str:
    return f"{DRY_RUN_DIR}/smoke-{stamp(run_at)}.log"


def notes_relpath(run_at: datetime) -> str:
    return f"{DRY_RUN_DIR}/notes-{_utc(run_at).date().isoformat()}.md"


def report_relpath(run_at: datetime) -> str:
    return f"report-{stamp(run_at)}.html"


def manifest_relpath(run_id: str) -> str:
    return f"{MANIFEST_DIR}/{run_id}.sha256"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def iso_z(moment: datetime) -> str:
    return _utc(moment).replace(microsecond=0).isoformat().replace("+00:00", "Z")
