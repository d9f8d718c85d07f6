"""The parity diff's former home, kept so existing imports keep working.

The code lives along the data's path: ``engine`` (the request and ``reconcile``),
``export_side``/``staging`` (the export), ``db_side`` (the database), ``compare`` (the
join), ``rules`` (the judging rule, pure) and ``report``. New code imports from those.
"""

from __future__ import annotations

from cron_dryrun.parity.db_side import (
    DB_KEYDAYS_TABLE as DB_KEYDAYS_TABLE,
)
from cron_dryrun.parity.db_side import (
    DB_READERS as DB_READERS,
)
from cron_dryrun.parity.db_side import (
    DB_STATS_COLUMNS as DB_STATS_COLUMNS,
)
from cron_dryrun.parity.db_side import (
    DB_STATS_TABLE as DB_STATS_TABLE,
)
from cron_dryrun.parity.db_side import (
    DbLoader as DbLoader,
)
from cron_dryrun.parity.db_side import (
    DbTotalsFiles as DbTotalsFiles,
)
from cron_dryrun.parity.db_side import (
    DbTotalsWriter as DbTotalsWriter,
)
from cron_dryrun.parity.db_side import (
    UnrecordedProbe as UnrecordedProbe,
)
from cron_dryrun.parity.db_side import (
    db_stats_sql as db_stats_sql,
)
from cron_dryrun.parity.pipeline import (
    reconcile as reconcile,
)
from cron_dryrun.parity.report import (
    REPORT_SCHEMA_VERSION as REPORT_SCHEMA_VERSION,
)
from cron_dryrun.parity.report import (
    detail_path_for as detail_path_for,
)
from cron_dryrun.parity.report import (
    report_dict as report_dict,
)
from cron_dryrun.parity.report import (
    report_json as report_json,
)
from cron_dryrun.parity.report import (
    report_path as report_path,
)
from cron_dryrun.parity.report import (
    reserve_report as reserve_report,
)
from cron_dryrun.parity.report import (
    write_report as write_report,
)
from cron_dryrun.parity.rules import (
    OFFENDER_KINDS as OFFENDER_KINDS,
)
from cron_dryrun.parity.rules import (
    SAMPLE_SIZE as SAMPLE_SIZE,
)
from cron_dryrun.parity.rules import (
    TOTALS_LISTED as TOTALS_LISTED,
)
from cron_dryrun.parity.rules import (
    DayResult as DayResult,
)
from cron_dryrun.parity.rules import (
    DiffResult as DiffResult,
)
from cron_dryrun.parity.rules import (
    Finding as Finding,
)
from cron_dryrun.parity.rules import (
    Judgement as Judgement,
)
from cron_dryrun.parity.rules import (
    Offender as Offender,
)
from cron_dryrun.parity.rules import (
    Policy as Policy,
)
from cron_dryrun.parity.rules import (
    Progress as Progress,
)
from cron_dryrun.parity.rules import (
    Rename as Rename,
)
from cron_dryrun.parity.rules import (
    chart_days as chart_days,
)
from cron_dryrun.parity.rules import (
    failure_message as failure_message,
)
from cron_dryrun.parity.rules import (
    judge as judge,
)
from cron_dryrun.parity.rules import (
    metric_findings as metric_findings,
)
from cron_dryrun.parity.rules import (
    relative_delta as relative_delta,
)
from cron_dryrun.parity.rules import (
    sql_fails as sql_fails,
)
from cron_dryrun.parity.rules import (
    summary_line as summary_line,
)
from cron_dryrun.parity.rules import (
    unaligned_hint as unaligned_hint,
)
from cron_dryrun.parity.staging import (
    DUCKDB_MEMORY_LIMIT as DUCKDB_MEMORY_LIMIT,
)
