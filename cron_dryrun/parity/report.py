"""The parity report: where it goes, and its bounded JSON (a superset of the app's diff).

Written exclusively (an existing file is never overwritten); the detail file of every
offender is written next to it by the comparison (compare.write_detail).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cron_dryrun.parity.formats import EXACT_METRICS, METRICS, DayKey
from cron_dryrun.parity.rules import DiffResult, judge, summary_line

if TYPE_CHECKING:
    pass


REPORT_SCHEMA_VERSION = 1


def report_path(audit_dir: Path, now: datetime) -> Path:
    """audit/telemetry-audit/<2025-10-07T22-44-28Z>-cron-diff.json; never an existing file."""
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    folder = Path(audit_dir) / "telemetry-audit"
    candidate = folder / f"{stamp}-cron-diff.json"
    n = 2
    while candidate.exists() or detail_path_for(candidate).exists():
        candidate = folder / f"{stamp}-cron-diff-{n}.json"
        n += 1
    return candidate


def detail_path_for(report: Path) -> Path:
    return report.with_name(report.name.removesuffix(".json") + ".detail.jsonl.gz")


def _record(key: DayKey, metrics: Mapping[str, int] | None, records: int) -> dict[str, Any]:
    """The app's record shape (key fields, metrics, recordCount), plus the day."""
    start = datetime(key.day.year, key.day.month, key.day.day, tzinfo=UTC)
    return {
        "day": key.day.isoformat(),
        "windowStartIso": start.isoformat().replace("+00:00", "Z"),
        "windowEndIso": (start + timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "projectId": key.project_id,
        "apiKeyId": key.api_key_id,
        "userId": key.user_id,
        "model": key.model,
        "serviceTier": key.service_tier or None,
        "batch": key.batch,
        "metrics": dict(metrics or {}),
        "recordCount": records,
    }


def _key_json(key: DayKey) -> dict[str, Any]:
    record = _record(key, None, 0)
    for extra in ("metrics", "recordCount"):
        record.pop(extra)
    return record


def report_dict(result: DiffResult, report: Path | None = None) -> dict[str, Any]:
    """The bounded report: a superset of the app's diff output (contract.md section 6)."""
    judgement = judge(result)
    mismatched = []
    for o in result.offenders["mismatched"]:
        mismatched.append(
            {
                "key": _key_json(o.key),
                # the app's sign: csv - db
                "deltas": {
                    m: (o.export or {}).get(m, 0) - (o.db or {}).get(m, 0)
                    for m in result.metrics_compared
                    if (o.export or {}).get(m, 0) != (o.db or {}).get(m, 0)
                },
                "csv": _record(o.key, o.export, o.export_records),
                "db": _record(o.key, o.db, o.db_records),
                "findings": [f.as_json() for f in o.findings],
                "judged": o.judged,
            }
        )

    def one_sided(kind: str, side: str) -> list[dict[str, Any]]:
        out = []
        for o in result.offenders[kind]:
            metrics = o.export if side == "export" else o.db
            records = o.export_records if side == "export" else o.db_records
            out.append({**_record(o.key, metrics, records), "judged": o.judged})
        return out

    return {
        "schemaVersion": REPORT_SCHEMA_VERSION,
        "tool": "cron-dryrun diff",
        "generatedAt": result.generated_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "verdict": judgement.verdict,
        "reasons": list(judgement.reasons),
        "warnings": list(judgement.warnings),
        "summary": summary_line(result),
        "policy": {
            "threshold": result.policy.threshold,
            "relativeDelta": "(db - export) / max(export, 1)",
            "tokenMetrics": [m for m in result.metrics_compared if m not in EXACT_METRICS],
            "exactMetrics": [m for m in result.metrics_compared if m in EXACT_METRICS],
            "metricsNotInExport": [m for m in METRICS if m not in result.metrics_compared],
            "badRowsFail": result.policy.bad_rows_fail,
            "sampleSize": result.policy.sample_size,
        },
        "windowRange": {
            "from": result.first_day.isoformat(),
            "to": result.last_day.isoformat(),
            "openFrom": result.open_from.isoformat() if result.open_from else None,
            "judgedDays": [d.isoformat() for d in result.judged_days],
        },
        "days": [
            {
                "day": d.day.isoformat(),
                "judged": d.judged,
                "reason": d.reason,
                "exportCoverageSeconds": d.coverage_seconds,
                "csv": d.export,
                "db": d.db,
                "keyDays": d.key_days,
            }
            for d in result.days
        ],
        "counts": dict(result.counts),
        "withoutIds": result.without_ids,
        "mismatched": mismatched,
        "missingInDb": one_sided("missingInDb", "export"),
        "missingInCsv": one_sided("missingInCsv", "db"),
        "totals": {"csv": result.totals("export"), "db": result.totals("db")},
        "notRecordedByIngestion": {
            d.isoformat(): list(m) for d, m in sorted(result.unrecorded.items())
        },
        "renamedModels": [
            {
                "exportModel": r.export_model,
                "dbModel": r.db_model,
                "keyDays": r.key_days,
                "totalsEqual": r.equal,
            }
            for r in result.renames
        ],
        "totalFindings": [f.as_json() for f in result.total_findings],
        "badRows": [{"file": p.file, "line": p.line, "reason": p.reason} for p in result.problems],
        "inspectedCsvFiles": list(result.files),
        "detail": (
            {"path": str(result.detail_path), "lines": result.detail_lines}
            if result.detail_path
            else None
        ),
        "report": str(report) if report else None,
        "elapsedSeconds": round(result.elapsed_seconds, 3),
        "dbReader": result.db_reader,
        "dbReaderFallback": result.db_reader_fallback,
    }


def report_json(data: Mapping[str, Any]) -> str:
    """The report file's text."""
    return json.dumps(data, indent=2) + "\n"


def write_report(result: DiffResult, path: Path) -> dict[str, Any]:
    """Write the report exclusively (an existing file is never overwritten)."""
    data = report_dict(result, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(report_json(data))
    return data


def reserve_report(audit_dir: Path, now: datetime) -> Path:
    """A free report name (``report_path``) whose detail file is created empty right away.

    The detail name is taken with O_EXCL, so two runs in the same second cannot pick
    the same pair; the report itself is then written by whoever owns the audit folder
    (the evidence writer), which never overwrites either.
    """
    while True:
        report = report_path(audit_dir, now)
        report.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(detail_path_for(report), "xb"):
                return report
        except FileExistsError:  # taken between the check and the create: next name
            continue
