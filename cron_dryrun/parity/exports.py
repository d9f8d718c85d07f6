"""The export readers' former home, kept so existing imports keep working.

The code lives along the data's path: ``formats`` (columns, keys, sniffing, cell rules),
``readers`` (the pure-Python reference readers and the roll-up), ``export_sql`` and
``staging`` (the DuckDB typed pass), ``export_side`` (the run's exports, staged once).
New code imports from those modules.
"""

from __future__ import annotations

from cron_dryrun.parity.export_sql import (
    FAST_MAX_COUNT as FAST_MAX_COUNT,
)
from cron_dryrun.parity.export_sql import (
    delimited_rows_sql as delimited_rows_sql,
)
from cron_dryrun.parity.export_sql import (
    fast_rows_sql as fast_rows_sql,
)
from cron_dryrun.parity.export_sql import (
    totals_table_ddl as totals_table_ddl,
)
from cron_dryrun.parity.formats import (
    BATCH_VALUES as BATCH_VALUES,
)
from cron_dryrun.parity.formats import (
    EXACT_METRICS as EXACT_METRICS,
)
from cron_dryrun.parity.formats import (
    EXPORT_SUFFIXES as EXPORT_SUFFIXES,
)
from cron_dryrun.parity.formats import (
    GZIP_MAGIC as GZIP_MAGIC,
)
from cron_dryrun.parity.formats import (
    HAS_IDS_SQL as HAS_IDS_SQL,
)
from cron_dryrun.parity.formats import (
    ID_COLUMNS as ID_COLUMNS,
)
from cron_dryrun.parity.formats import (
    JSON_METRICS as JSON_METRICS,
)
from cron_dryrun.parity.formats import (
    KEY_TEXT_COLUMNS as KEY_TEXT_COLUMNS,
)
from cron_dryrun.parity.formats import (
    MAX_EXACT as MAX_EXACT,
)
from cron_dryrun.parity.formats import (
    METRIC_COLUMNS as METRIC_COLUMNS,
)
from cron_dryrun.parity.formats import (
    METRICS as METRICS,
)
from cron_dryrun.parity.formats import (
    PROBLEM_SAMPLE as PROBLEM_SAMPLE,
)
from cron_dryrun.parity.formats import (
    SECONDS_PER_DAY as SECONDS_PER_DAY,
)
from cron_dryrun.parity.formats import (
    TIME_COLUMNS as TIME_COLUMNS,
)
from cron_dryrun.parity.formats import (
    TOKEN_METRICS as TOKEN_METRICS,
)
from cron_dryrun.parity.formats import (
    TOTALS_COLUMNS as TOTALS_COLUMNS,
)
from cron_dryrun.parity.formats import (
    BucketRow as BucketRow,
)
from cron_dryrun.parity.formats import (
    DayKey as DayKey,
)
from cron_dryrun.parity.formats import (
    ExportFormat as ExportFormat,
)
from cron_dryrun.parity.formats import (
    ExportProblem as ExportProblem,
)
from cron_dryrun.parity.formats import (
    bucket_problem as bucket_problem,
)
from cron_dryrun.parity.formats import (
    expand_export_paths as expand_export_paths,
)
from cron_dryrun.parity.formats import (
    export_file_message as export_file_message,
)
from cron_dryrun.parity.formats import (
    is_gzip as is_gzip,
)
from cron_dryrun.parity.formats import (
    missing_columns_message as missing_columns_message,
)
from cron_dryrun.parity.formats import (
    open_export_text as open_export_text,
)
from cron_dryrun.parity.formats import (
    parse_count as parse_count,
)
from cron_dryrun.parity.formats import (
    parse_delimited_row as parse_delimited_row,
)
from cron_dryrun.parity.formats import (
    parse_time as parse_time,
)
from cron_dryrun.parity.formats import (
    read_export_head as read_export_head,
)
from cron_dryrun.parity.formats import (
    sniff_export as sniff_export,
)
from cron_dryrun.parity.readers import (
    DailyRollup as DailyRollup,
)
from cron_dryrun.parity.readers import (
    SharedKeyDays as SharedKeyDays,
)
from cron_dryrun.parity.readers import (
    TimeOverlap as TimeOverlap,
)
from cron_dryrun.parity.readers import (
    common_metrics as common_metrics,
)
from cron_dryrun.parity.readers import (
    day_coverage as day_coverage,
)
from cron_dryrun.parity.readers import (
    overlapping_buckets as overlapping_buckets,
)
from cron_dryrun.parity.readers import (
    read_delimited as read_delimited,
)
from cron_dryrun.parity.readers import (
    read_export as read_export,
)
from cron_dryrun.parity.readers import (
    read_json_pages as read_json_pages,
)
from cron_dryrun.parity.readers import (
    rollup_daily as rollup_daily,
)
from cron_dryrun.parity.readers import (
    time_overlaps as time_overlaps,
)
from cron_dryrun.parity.readers import (
    write_totals_csv as write_totals_csv,
)
from cron_dryrun.parity.staging import (
    FileLoad as FileLoad,
)
from cron_dryrun.parity.staging import (
    StagedExport as StagedExport,
)
from cron_dryrun.parity.staging import (
    duckdb_engine as duckdb_engine,
)
from cron_dryrun.parity.staging import (
    stage_delimited_duckdb as stage_delimited_duckdb,
)
