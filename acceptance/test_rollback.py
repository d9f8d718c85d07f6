"""Runbook, Rollback Procedure: delete the rows the dry run wrote, and nothing earlier.

Destructive: deselected unless ``--allow-destructive``, and run last. It rolls
back the rows written since the run's yesterday window start (or the dry-run
start, when that is later), then checks those rows are gone and every earlier
row is exactly as it was. The action goes to audit/rollback_log.md.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from cron_dryrun.cli.rollback import rollback
from cron_dryrun.config.settings import Settings
from cron_dryrun.evidence import ROLLBACK_LOG_RELPATH, EvidenceWriter, Redactor, run_secrets
from cron_dryrun.exchange.record import RecordedRun
from cron_dryrun.target import database as db
from cron_dryrun.testing import Evidence
from cron_dryrun.windows import DAY, day_start, naive_utc

pytestmark = pytest.mark.destructive

SNAPSHOT = "SELECT id, usage_events::text FROM usage_events WHERE window_start IS NULL OR window_start < %s ORDER BY id"


def _earlier_rows(dsn: str, since: datetime) -> list[tuple[int, str]]:
    with db.read_only(dsn) as conn:
        return [
            (int(r[0]), str(r[1])) for r in conn.execute(SNAPSHOT, (naive_utc(since),)).fetchall()
        ]


def _count_since(dsn: str, since: datetime) -> int:
    with db.read_only(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM usage_events WHERE window_start >= %s", (naive_utc(since),)
        ).fetchone()
    return int(row[0]) if row else 0


def test_rollback_deletes_the_dry_run_rows_and_nothing_earlier(
    dryrun_settings: Settings, app_dsn: str, cron_run: RecordedRun, evidence: Evidence
) -> None:
    since = day_start(cron_run.run_at) - DAY  # the run's yesterday window
    # this run is the dry run's first: it starts at its earliest window (never before a given start)
    dry_run_start = dryrun_settings.dry_run_start or since
    since = max(since, dry_run_start)
    earlier = _earlier_rows(app_dsn, since)
    counted_before = _count_since(app_dsn, since)
    writer = EvidenceWriter(
        dryrun_settings.audit_dir, Redactor(run_secrets(dryrun_settings.cron_secret, app_dsn))
    )

    result = rollback(
        app_dsn,
        since,
        now=datetime.now(UTC),
        dry_run_start=dry_run_start,
        confirm=lambda counted, statement, database: True,  # --allow-destructive is the consent
        writer=writer,
    )
    digest = hashlib.sha256("".join(text for _, text in earlier).encode()).hexdigest()[:16]
    evidence.attach(
        "rollback",
        f"statement: {result.statement}\nrows counted before: {counted_before}\n"
        f"counted: {result.counted}\ndeleted: {result.deleted}\ncommitted: {result.committed}\n"
        f"message: {result.message}\nearlier rows kept: {len(earlier)} (sha256 {digest})\n"
        f"log: {result.log_path}",
    )

    assert result.committed, result.message
    assert result.deleted == result.counted
    assert _count_since(app_dsn, since) == 0, (
        f"rows with window_start >= {since} remain after the rollback"
    )
    after = _earlier_rows(app_dsn, since)
    assert after == earlier, (
        f"rows before {since} changed: {len(earlier)} before, {len(after)} after the rollback"
    )
    log = (dryrun_settings.audit_dir / ROLLBACK_LOG_RELPATH).read_text()
    assert f"- Statement: `{result.statement}`" in log
    assert "- [ ] Cron schedule disabled in Vercel" in log
