"""One exchange with the cron, observed: watermark the database, trigger, read what it wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from cron_dryrun.exchange.record import DbObservation, RecordedRun, UsageRow

if TYPE_CHECKING:
    from cron_dryrun.session.state import DryRunState, Target
    from cron_dryrun.target.client import CronClient


def trigger_and_observe(
    client: CronClient, target: Target, state: DryRunState, label: str
) -> RecordedRun:
    """Watermark the database (read-only), trigger once, read what the trigger wrote."""
    # psycopg here, not at the top: the plugin loads this module in every pytest run
    import psycopg

    from cron_dryrun.rules.checks import exchange_problem
    from cron_dryrun.target.database import UsageWatch, describe_db_error

    db_error = None
    watch = None
    try:
        watch = UsageWatch(target.database_dsn)
    except psycopg.Error as exc:  # the checks report it; the trigger still happens
        db_error = describe_db_error(exc)  # one line; libpq's echoes mapped
    run_at = datetime.now(UTC)
    exchange = client.trigger(label)  # each attempt reaches state.transcripts via on_exchange
    problem = exchange_problem(exchange)
    body = None if problem else exchange.final.json_body()
    observation = None
    if watch is not None:
        try:
            rows, count_after = watch.written()
            observation = DbObservation(
                watch.rows_before,
                count_after,
                tuple(UsageRow(*r) for r in rows),
                max_id_before=watch.max_id_before,
            )
        except psycopg.Error as exc:
            db_error = describe_db_error(exc)  # one line; libpq's echoes mapped
    return RecordedRun(
        target=target.cron_url,
        method=client.method,
        run_at=run_at,
        exchange=exchange,
        problem=problem,
        body=body,
        active_openai_keys=watch.openai_keys if watch is not None else None,
        db=observation,
        db_error=db_error,
    )


RERUN_LABEL = "idempotent rerun"


def rerun_once(client: CronClient, target: Target, state: DryRunState) -> RecordedRun:
    """The second trigger inside the same windows, made once per session: the rerun check
    judges idempotence and the telemetry check its counters on the same exchange."""
    if state.rerun is None:
        state.rerun = trigger_and_observe(client, target, state, label=RERUN_LABEL)
    return state.rerun
