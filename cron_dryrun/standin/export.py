"""The OpenAI dashboard's completions export, written from the stand-in's usage truth.

Shaped like real exports (contract.md section 5): the exact header, counts as
floats (``59200.0``), ``batch`` as ``TRUE``/``FALSE``, ISO times with ``+00:00``,
and a bucket with no usage as one row whose id and metric cells are all empty.
``export_rows`` is pure; ``write_export`` is the only function touching disk.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from datetime import datetime
from pathlib import Path

from cron_dryrun.standin.usage_truth import BUCKET_WIDTHS, UsageOrg, epoch, from_epoch, group_usage

EXPORT_HEADER = (
    "start_time",
    "end_time",
    "start_time_iso",
    "end_time_iso",
    "project_id",
    "num_model_requests",
    "user_id",
    "api_key_id",
    "model",
    "batch",
    "service_tier",
    "input_tokens",
    "output_tokens",
    "input_cached_tokens",
    "input_uncached_tokens",
    "input_text_tokens",
    "output_text_tokens",
    "input_cached_text_tokens",
    "input_audio_tokens",
    "input_cached_audio_tokens",
    "output_audio_tokens",
    "input_image_tokens",
    "input_cached_image_tokens",
    "output_image_tokens",
)
_ID_COLUMNS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")
_GROUP_ALL = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")


def _iso(value: int) -> str:
    return from_epoch(value).isoformat()  # "2025-10-07T00:00:00+00:00", as the dashboard writes


def export_rows(
    org: UsageOrg, start: datetime, end: datetime, bucket_width: str = "1d"
) -> list[dict[str, str]]:
    """The export's rows for [start, end) in buckets of ``bucket_width`` (1d, 1h or 1m)."""
    if bucket_width not in BUCKET_WIDTHS:
        raise ValueError(
            f"bucket_width must be one of {', '.join(BUCKET_WIDTHS)}, got {bucket_width!r}"
        )
    rows: list[dict[str, str]] = []
    for bucket in org.buckets(epoch(start), epoch(end), BUCKET_WIDTHS[bucket_width]):
        times = {
            "start_time": str(bucket.start),
            "end_time": str(bucket.end),
            "start_time_iso": _iso(bucket.start),
            "end_time_iso": _iso(bucket.end),
        }
        results = [
            (ids, usage)
            for ids, usage in group_usage(bucket.usage, _GROUP_ALL)
            if not usage.is_empty
        ]
        if not results:
            rows.append({**times, **{name: "" for name in EXPORT_HEADER if name not in times}})
            continue
        for ids, usage in results:
            row = dict(times)
            for name in _ID_COLUMNS:
                value = ids[name]
                row[name] = ("TRUE" if value else "FALSE") if name == "batch" else str(value)
            row.update({name: f"{float(n)!r}" for name, n in usage.export_metrics().items()})
            rows.append(row)
    return rows


def render_export(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_HEADER, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def export_file_name(start: datetime, end: datetime, bucket_width: str) -> str:
    return f"completions_usage_{start:%Y-%m-%d}_{end:%Y-%m-%d}_{bucket_width}.csv"


def write_export(
    path: Path, org: UsageOrg, start: datetime, end: datetime, bucket_width: str = "1d"
) -> Path:
    """Write the export atomically (temp file + rename): a reader never sees half a file."""
    text = render_export(export_rows(org, start, end, bucket_width))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
