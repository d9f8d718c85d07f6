"""The local stack: a stand-in OpenAI usage API and a stand-in daily usage cron, on loopback.

``start_local_stack(dsn)`` seeds the app database (users, provider keys, history),
applies the chosen fault, serves both apps on 127.0.0.1 ephemeral ports, writes the
dashboard exports of yesterday and today, and stops everything on exit.
"""

from __future__ import annotations

import contextlib
import secrets as _secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psycopg

from cron_dryrun.standin.cron_app import CRON_PATH, DailyUsageCronApp, utc_now
from cron_dryrun.standin.edge import VercelEdge
from cron_dryrun.standin.export import export_file_name, write_export
from cron_dryrun.standin.faults import FAULTS, Fault, get_fault
from cron_dryrun.standin.openai_api import ApiAccount, OpenAIUsageApi
from cron_dryrun.standin.seed import SeedPlan, load_seed, org_for, seed_plan
from cron_dryrun.standin.server import start_server
from cron_dryrun.standin.usage_truth import UsageOrg
from cron_dryrun.windows import as_utc, day_start

__all__ = ["FAULTS", "LocalStack", "start_local_stack"]


@dataclass(frozen=True)
class LocalStack:
    """A running local stack. ``secret`` is kept out of repr so it does not leak into logs."""

    cron_url: str  # http://127.0.0.1:PORT/api/cron/daily-usage
    openai_url: str
    secret: str = field(repr=False)
    database_dsn: str = field(repr=False)
    fault: str
    export_paths: tuple[Path, ...]  # dashboard exports of yesterday and today (clock() at start)
    admin_key: str = field(repr=False)  # the admin-mode key: reads the usage API like an admin key
    _export_org: UsageOrg = field(repr=False, compare=False)

    def write_export(
        self, path: Path, start: datetime, end: datetime, bucket_width: str = "1d"
    ) -> Path:
        """The admin organisation's dashboard export for [start, end) in ``bucket_width`` buckets."""
        return write_export(Path(path), self._export_org, as_utc(start), as_utc(end), bucket_width)


def _accounts(plan: SeedPlan, fault: Fault) -> dict[str, ApiAccount]:
    """What each seeded OpenAI key sees at the stand-in API, with the fault's changes."""
    accounts = {}
    for key in plan.openai_keys:
        admin = key.usage_mode == "admin"
        org = org_for(key)
        if admin and fault.dated_model:
            org = org.with_dated_model()
        refusal = fault.every_key_refusal_status or (fault.admin_refusal_status if admin else None)
        accounts[key.secret] = ApiAccount(org=org, admin=admin, refusal_status=refusal)
    return accounts


def _drop_unique_index(database_dsn: str) -> None:
    """duplicate-rerun: a database whose migration never created usage_admin_bucket_idx."""
    with psycopg.connect(database_dsn, connect_timeout=10) as conn:
        conn.execute("DROP INDEX IF EXISTS usage_admin_bucket_idx")


@contextlib.contextmanager
def start_local_stack(
    database_dsn: str,
    *,
    secret: str | None = None,
    fault: str = "none",
    clock: Callable[[], datetime] | None = None,
    export_dir: Path | None = None,
    seed: int = 7,
    slow_delay_s: float = 5.0,
    compress: str = "none",
    bypass_secret: str | None = None,
    ssl_certfile: Path | None = None,
) -> Iterator[LocalStack]:
    """Seed ``database_dsn`` (which already has the app's tables), start both servers, yield, stop.

    ``secret``: the cron's secret (pass CRON_SECRET when set); a random one when None.
    ``clock``: "now" for the cron and the seed (aware UTC); the wall clock when None.
    ``export_dir``: where the exports go; a temporary folder (removed at exit) when None.
    ``compress``/``bypass_secret``: Vercel's edge in front of the cron (``standin.edge``):
    answers compressed in that coding; Deployment Protection on, passed with that secret.
    ``ssl_certfile``: serve the cron over https with this key and certificate chain (PEM).
    """
    chosen = get_fault(fault)
    clock = clock or utc_now
    plan = seed_plan(seed)
    started_at = as_utc(clock())
    load_seed(database_dsn, plan, started_at)
    if chosen.plain_inserts:
        _drop_unique_index(database_dsn)
    accounts = _accounts(plan, chosen)
    export_org = accounts[plan.admin_key.secret].org
    cron_secret = secret if secret is not None else _secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        if export_dir is None:
            export_dir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="cron-dryrun-export-"))
            )
        today = day_start(started_at)
        paths = []
        for day in (today - timedelta(days=1), today):
            end = day + timedelta(days=1)
            paths.append(
                write_export(
                    Path(export_dir) / export_file_name(day, end, "1d"), export_org, day, end, "1d"
                )
            )
        openai = start_server(OpenAIUsageApi(accounts), name="openai")
        stack.callback(openai.stop)
        cron_app = DailyUsageCronApp(
            database_dsn=database_dsn,
            openai_url=openai.url,
            secret=cron_secret,
            fault=chosen,
            clock=clock,
            slow_delay_s=slow_delay_s,
        )
        edge = VercelEdge(cron_app, compress=compress, bypass_secret=bypass_secret)
        cron = start_server(edge, name="cron", ssl_certfile=ssl_certfile)
        stack.callback(cron.stop)

        # Runs first on exit: both servers start winding down at once (each takes ~0.2 s).
        def signal_both() -> None:
            cron.signal_stop()
            openai.signal_stop()

        stack.callback(signal_both)
        yield LocalStack(
            cron_url=cron.url + CRON_PATH,
            openai_url=openai.url,
            secret=cron_secret,
            database_dsn=database_dsn,
            fault=chosen.name,
            export_paths=tuple(paths),
            admin_key=plan.admin_key.secret,
            _export_org=export_org,
        )
